"""Image-level protocols on frozen features: the VOC07 linear SVMs, weighted k-NN and a linear classifier.

Every protocol runs the backbone once per split through :func:`densessl.eval.features.extract`
(``cache_dir`` shares that pass between commands) and returns a dict of plain Python values:
numbers, strings, lists and dicts, ready for ``json.dumps``. Accuracies, APs and mAPs are
**percentages** (0-100), as the papers report them; ``seconds`` is the wall time including the
feature extraction. A value that is undefined (the AP of a class without positives) is ``None``.

Pre-processing. "Centre crop" below means: shorter side resized (bilinear, antialiased) to
``round(image_size * 256 / 224)``, then the central ``image_size`` square, i.e. Resize(256) +
CenterCrop(224) at ``image_size=224``. "Squash" means the whole image resized to
``image_size`` x ``image_size``. Then the ImageNet normalisation (done by ``extract``).

:func:`run_svm_voc07`, ``variant="revisited"`` (Revisiting-Contrastive-SSL's VOC SVM)
    centre crop; global-average-pooled last feature map (C-d, 2048 for a ResNet-50), each
    vector divided by (its L2 norm + 1e-5); one ``LinearSVC`` per class with C = 0.5,
    ``class_weight={+1: 2, -1: 1}``, L2 penalty, squared hinge, dual, tol 1e-4, 2000
    iterations, no cross-validation. Difficult images (label 0) are negatives in training
    **and** in the test AP. Scores are the test decision values; AP is all-point.

:func:`run_svm_voc07`, ``variant="openselfsup"`` (OpenSelfSup / FAIR benchmark, "feat5")
    squash (the reference resizes to 256, then to 224x224); the last map average-pooled with
    an (h-1) x (w-1) window and stride 1 into a 2x2 grid (kernel 6 on the 7x7 res5 map of a
    224 px input: 2 x 2 x 2048 = 8192-d), divided by (L2 norm + 1e-5); the same ``LinearSVC``
    settings. For each class the cost is the one with the best mean AP over 3 stratified folds
    of the training split (difficult images as negatives, first cost wins a tie) from
    :data:`OPENSELFSUP_COSTS`, then the SVM is refit on the whole training split. Difficult
    images are negatives in training and **left out** of the test AP. AP is all-point.

:func:`run_knn`
    weighted k-NN (InstDisc / DINO): centre crop, global average pooling, L2 normalisation;
    the k most cosine-similar training images vote for their class with weight
    ``exp(similarity / temperature)``. Defaults k = 20, temperature 0.07 (DINO's).

:func:`run_linear`
    a cached-feature version of the linear probe ("linear (LR on cached features)" in the
    spec): centre crop, global average pooling, features standardised with the training
    mean and standard deviation, multinomial logistic regression (L-BFGS) with the inverse
    regularisation C chosen on a held-out part of the training split, then refit on all of
    it. There is no augmentation (the features are computed once), so the numbers are not
    those of the SGD recipe with RandomResizedCrop (lr 30, 100 epochs).

Vision Transformers. Every "global average pooling" above is, for a ViT, the mean of its patch
tokens after the final norm (the class token is not used; :mod:`densessl.eval.features` says
why), and the OpenSelfSup 2x2 grid pools windows of patch tokens the same way. Image sizes that
are not multiples of the patch size are resized to the nearest multiple before the backbone.

The SVMs and the logistic regression use scikit-learn (``pip install scikit-learn``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densessl.errors import ConfigError, DataError
from densessl.eval.ap import average_precision
from densessl.eval.features import extract, pooling_name, resize_center_crop

__all__ = [
    "LINEAR_COSTS",
    "OPENSELFSUP_COSTS",
    "REVISITED_COST",
    "SVM_CLASS_WEIGHT",
    "CentreCropView",
    "GridPool2",
    "run_knn",
    "run_linear",
    "run_svm_voc07",
]

#: The cost grid of the OpenSelfSup / FAIR VOC07 SVM: 1, 10, 100 and 0.5**k for k = 4..19.
OPENSELFSUP_COSTS: tuple[float, ...] = (1.0, 10.0, 100.0) + tuple(0.5**k for k in range(4, 20))
#: The single cost of the Revisiting VOC07 SVM.
REVISITED_COST = 0.5
#: Positive images weigh twice as much as negative ones in both VOC07 SVM protocols.
SVM_CLASS_WEIGHT = {1: 2.0, -1: 1.0}
#: Inverse regularisation strengths tried by :func:`run_linear`.
LINEAR_COSTS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)

_NORM_EPS = 1e-5
SvmVariant = Literal["revisited", "openselfsup"]


def _sklearn(what: str):
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{what} needs scikit-learn; install it with 'pip install scikit-learn' "
            "(or 'pip install densessl[dev]')"
        ) from None
    import sklearn.linear_model
    import sklearn.model_selection
    import sklearn.svm

    return sklearn


class CentreCropView(Sequence):
    """``samples`` with each image resized (shorter side) to ``resize`` and centre-cropped to ``crop``.

    Items keep their label: ``(image, label)`` in, ``(cropped image, label)`` out; a bare image
    gives a bare image. ``describe`` marks the crop so that feature caches of cropped and
    uncropped images never collide.
    """

    def __init__(self, samples: Sequence[Any], resize: int, crop: int) -> None:
        if crop > resize:
            raise ConfigError(f"centre crop {crop} is larger than the resized side {resize}")
        self.samples = samples
        self.resize = resize
        self.crop = crop

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        inner = getattr(self.samples, "describe", None)
        name = inner(index) if inner else str(index)
        return f"{name}#resize{self.resize}-crop{self.crop}"

    def _transform(self, image: np.ndarray) -> np.ndarray:
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return resize_center_crop(chw, self.resize, self.crop).permute(1, 2, 0).numpy()

    def __getitem__(self, index: int):  # type: ignore[override]
        item = self.samples[index]
        if isinstance(item, tuple | list):
            return (self._transform(item[0]), *item[1:])
        return self._transform(item)


class GridPool2(nn.Module):
    """The OpenSelfSup res5 pooling: average over (h-1) x (w-1) windows, stride 1 -> 2 x 2 cells."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_channels = backbone.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(x)
        h, w = out.shape[-2:]
        if h < 2 or w < 2:
            raise ConfigError(
                f"the feature map is {h}x{w}; a 2x2 pooling grid needs at least 2x2 (raise --image-size)"
            )
        return F.avg_pool2d(out, kernel_size=(h - 1, w - 1), stride=1)


def _centre_crop(samples: Sequence[Any], image_size: int) -> CentreCropView:
    return CentreCropView(samples, round(image_size * 256 / 224), image_size)


def _l2_normalise(x: torch.Tensor) -> np.ndarray:
    x = x.double()
    return (x / (x.norm(dim=1, keepdim=True) + _NORM_EPS)).numpy()


def _labels_of(dataset: Sequence[Any]) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:  # a plain list of (image, label) pairs
        labels = [dataset[i][1] for i in range(len(dataset))]
    return np.asarray(labels)


def _pct(value: float) -> float | None:
    return None if value is None or math.isnan(value) else 100.0 * float(value)


def _reemit(caught: list[warnings.WarningMessage], counted: type[Warning]) -> int:
    """Count the recorded warnings of type ``counted``; pass the others on."""
    for w in caught:
        if not issubclass(w.category, counted):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return sum(issubclass(w.category, counted) for w in caught)


def _check_image_size(image_size: int) -> None:
    if int(image_size) < 8:
        raise ConfigError(f"image size {image_size} is too small (at least 8 pixels)")


# --------------------------------------------------------------------------- VOC07 SVM


def _make_svm(sk, cost: float, seed: int, max_iter: int):
    return sk.svm.LinearSVC(
        C=cost,
        class_weight=SVM_CLASS_WEIGHT,
        penalty="l2",
        loss="squared_hinge",
        dual=True,
        tol=1e-4,
        max_iter=max_iter,
        fit_intercept=True,
        intercept_scaling=1.0,
        random_state=seed,
    )


def _cv_cost(sk, x: np.ndarray, y: np.ndarray, costs: Sequence[float], folds: int, seed: int, max_iter: int):
    """The cost with the best mean fold AP (difficult = negative), the scores, the folds used."""
    n_pos, n_neg = int((y == 1).sum()), int((y == -1).sum())
    n_splits = min(folds, n_pos, n_neg)
    if n_splits < 2:
        return costs[0], [], 0
    splitter = sk.model_selection.StratifiedKFold(n_splits=n_splits, shuffle=False)
    splits = list(splitter.split(x, y))
    means = []
    for cost in costs:
        aps = []
        for fit_idx, held_idx in splits:
            svm = _make_svm(sk, cost, seed, max_iter).fit(x[fit_idx], y[fit_idx])
            aps.append(average_precision(svm.decision_function(x[held_idx]), y[held_idx]))
        means.append(float(np.nanmean(aps)))
    best = int(np.argmax(means))
    return costs[best], means, n_splits


def run_svm_voc07(
    backbone: nn.Module,
    train_set: Sequence[Any],
    test_set: Sequence[Any],
    variant: SvmVariant = "revisited",
    *,
    image_size: int = 224,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    cost: float = REVISITED_COST,
    costs: Sequence[float] = OPENSELFSUP_COSTS,
    cv_folds: int = 3,
    eleven_point: bool = False,
    max_iter: int = 2000,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-class linear SVMs on frozen pooled features, scored by AP (see the module docstring).

    ``train_set`` / ``test_set`` yield ``(image, labels)`` with a row of per-class labels in
    {1, -1, 0} (0 = difficult), e.g. :class:`~densessl.data.classification.VOC07Classification`
    ``trainval`` and ``test``. ``cost`` is used by ``revisited``, ``costs`` / ``cv_folds`` by
    ``openselfsup``. ``eleven_point`` swaps the all-point AP of both references for the VOC07
    11-point one.

    Returns (percentages): ``map`` (mean over the classes with a test positive), ``ap_per_class``
    ``{class: AP or None}``, ``chance_map`` (the mAP of a constant score: the mean positive rate
    among the scored test images), ``cost_per_class``, and the settings used: ``variant``,
    ``preprocessing``, ``pooling``, ``feature_dim``, ``normalisation``, ``costs``, ``cv_folds``,
    ``class_weight``, ``difficult_train``, ``difficult_test``, ``ap``, ``image_size``,
    ``num_train``, ``num_test``, ``skipped_classes`` (no positive, or nothing but positives, in
    training: no SVM), ``cv_skipped_classes`` (too few positives for the folds: first cost
    used), ``convergence_warnings`` (fits that hit ``max_iter``), ``seconds``.
    """
    if variant not in ("revisited", "openselfsup"):
        raise ConfigError(f"unknown VOC07 SVM variant {variant!r}; choose 'revisited' or 'openselfsup'")
    _check_image_size(image_size)
    if variant == "openselfsup" and (not costs or cv_folds < 2):
        raise ConfigError("the openselfsup SVM needs at least one cost and at least 2 folds")
    if cost <= 0 or any(c <= 0 for c in costs):
        raise ConfigError("SVM costs must be positive")
    sk = _sklearn("the VOC07 SVM protocol")
    from sklearn.exceptions import ConvergenceWarning

    start = time.perf_counter()
    y_train, y_test = _labels_of(train_set).astype(np.int64), _labels_of(test_set).astype(np.int64)
    for name, y, data in (("training", y_train, train_set), ("test", y_test, test_set)):
        if y.ndim != 2 or len(y) != len(data):
            raise DataError(f"the {name} labels must be one row of per-class labels per image")
        if not np.all(np.isin(y, (1, -1, 0))):
            raise DataError(f"the {name} labels must be 1 (present), -1 (absent) or 0 (difficult)")
    train_names, test_names = getattr(train_set, "classes", None), getattr(test_set, "classes", None)
    if train_names is not None and test_names is not None and list(train_names) != list(test_names):
        # classes discovered per split (custom VOC07 layouts) must line up column by column
        only_train = sorted(set(train_names) - set(test_names))
        only_test = sorted(set(test_names) - set(train_names))
        raise DataError(
            "training and test splits name different classes: "
            f"only in training {only_train or 'none'}, only in test {only_test or 'none'}"
            + ("" if only_train or only_test else " (same names, different order)")
        )
    if y_train.shape[1] != y_test.shape[1]:
        raise DataError(f"training has {y_train.shape[1]} classes but test has {y_test.shape[1]}")
    n_cls = y_train.shape[1]
    names = list(class_names or getattr(train_set, "classes", None) or [str(c) for c in range(n_cls)])
    if len(names) != n_cls:
        raise ConfigError(f"{len(names)} class names for {n_cls} classes")

    opts = dict(batch_size=batch_size, device=device, dense=False, cache_dir=cache_dir)
    if variant == "revisited":
        net: nn.Module = backbone
        train_in, test_in = _centre_crop(train_set, image_size), _centre_crop(test_set, image_size)
        grid = 1
    else:
        net, train_in, test_in, grid = GridPool2(backbone), train_set, test_set, 2
    x_train = _l2_normalise(extract(net, train_in, image_size, pooled_grid=grid, **opts).pooled)
    x_test = _l2_normalise(extract(net, test_in, image_size, pooled_grid=grid, **opts).pooled)

    # both references: difficult (0) is a negative in training
    y_fit = np.where(y_train == 1, 1, -1)
    # test: revisited counts difficult as negative, openselfsup leaves it out of the AP
    y_eval = np.where(y_test == 1, 1, -1) if variant == "revisited" else y_test
    ap: dict[str, float | None] = {}
    chosen: dict[str, float | None] = {}
    chance: list[float] = []
    skipped, cv_skipped = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for c, name in enumerate(names):
            y = y_fit[:, c]
            if len(np.unique(y)) < 2:
                skipped.append(name)
                ap[name], chosen[name] = None, None
                continue
            if variant == "revisited":
                best = cost
            else:
                best, _, used = _cv_cost(sk, x_train, y, list(costs), cv_folds, seed, max_iter)
                if used == 0:
                    cv_skipped.append(name)
            svm = _make_svm(sk, best, seed, max_iter).fit(x_train, y)
            value = average_precision(svm.decision_function(x_test), y_eval[:, c], eleven_point)
            ap[name], chosen[name] = _pct(value), float(best)
            scored = y_eval[:, c] != 0
            if not math.isnan(value):
                chance.append(float((y_eval[scored, c] == 1).mean()))
    n_warnings = _reemit(caught, ConvergenceWarning)
    defined = [v for v in ap.values() if v is not None]
    revisited = variant == "revisited"
    return {
        "variant": variant,
        "map": float(np.mean(defined)) if defined else None,
        "ap_per_class": ap,
        "chance_map": 100.0 * float(np.mean(chance)) if chance else None,
        "cost_per_class": chosen,
        "preprocessing": "resize 256/224 + centre crop" if revisited else "resize to a square",
        "pooling": pooling_name(backbone) if revisited else "2x2 grid, window (h-1)x(w-1), stride 1",
        "feature_dim": int(x_train.shape[1]),
        "normalisation": "l2 (norm + 1e-5)",
        "costs": [float(cost)] if revisited else [float(c) for c in costs],
        "cv_folds": 0 if revisited else int(cv_folds),
        "class_weight": {"1": SVM_CLASS_WEIGHT[1], "-1": SVM_CLASS_WEIGHT[-1]},
        "difficult_train": "negative",
        "difficult_test": "negative" if revisited else "ignored",
        "ap": "11-point" if eleven_point else "all-point",
        "image_size": int(image_size),
        "num_train": len(train_set),
        "num_test": len(test_set),
        "skipped_classes": skipped,
        "cv_skipped_classes": cv_skipped,
        "convergence_warnings": int(n_warnings),
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- k-NN and linear


def _single_labels(train_set: Sequence[Any], val_set: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer class labels of both splits and the number of classes (checking class lists agree)."""
    train_classes = getattr(train_set, "classes", None)
    val_classes = getattr(val_set, "classes", None)
    if train_classes is not None and val_classes is not None and list(train_classes) != list(val_classes):
        raise DataError(
            "the training and validation splits have different classes: "
            f"{list(train_classes)} vs {list(val_classes)}"
        )
    labels = []
    for name, data in (("training", train_set), ("validation", val_set)):
        y = _labels_of(data)
        if y.ndim != 1 or len(y) != len(data) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise DataError(f"the {name} split must give one non-negative integer class per image")
        labels.append(y.astype(np.int64))
    if train_classes is not None:
        num_classes = len(train_classes)
    else:
        num_classes = int(max(labels[0].max(), labels[1].max())) + 1
    if labels[1].max() >= num_classes or labels[0].max() >= num_classes:
        raise DataError(f"a class index is outside the {num_classes} classes")
    return labels[0], labels[1], num_classes


def _pooled(backbone, samples, image_size, centre_crop, opts) -> torch.Tensor:
    inputs = _centre_crop(samples, image_size) if centre_crop else samples
    return extract(backbone, inputs, image_size, pooled_grid=1, dense=False, **opts).pooled.float()


def run_knn(
    backbone: nn.Module,
    train_set: Sequence[Any],
    val_set: Sequence[Any],
    *,
    k: int = 20,
    temperature: float = 0.07,
    image_size: int = 224,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    centre_crop: bool = True,
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """Weighted k-NN classification on L2-normalised globally pooled features (spec A3).

    Splits yield ``(image, class_index)`` (e.g.
    :class:`~densessl.data.classification.ImageFolderClassification`). ``k`` is capped at the
    number of training images. Returns (percentages): ``top1``, ``top5`` (only with at least 5
    classes), ``k`` (the one used), ``temperature``, ``num_classes``, ``num_train``, ``num_val``,
    ``feature_dim``, ``image_size``, ``centre_crop``, ``seconds``.
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if not temperature > 0:
        raise ConfigError(f"the k-NN temperature must be positive, got {temperature}")
    _check_image_size(image_size)
    start = time.perf_counter()
    y_train, y_val, num_classes = _single_labels(train_set, val_set)
    opts = dict(batch_size=batch_size, device=device, cache_dir=cache_dir)
    dev = torch.device(device)
    train = F.normalize(_pooled(backbone, train_set, image_size, centre_crop, opts), dim=1).to(dev)
    val = F.normalize(_pooled(backbone, val_set, image_size, centre_crop, opts), dim=1).to(dev)
    targets = torch.from_numpy(y_train).to(dev)
    truth = torch.from_numpy(y_val).to(dev)
    k_used = min(k, len(train))
    top = min(5, num_classes)
    hits1 = hits5 = 0
    for begin in range(0, len(val), chunk_size):
        sims = val[begin : begin + chunk_size] @ train.T
        sim, idx = sims.topk(k_used, dim=1)
        votes = torch.zeros(len(sims), num_classes, device=dev, dtype=torch.float64)
        votes.scatter_add_(1, targets[idx], (sim.double() / temperature).exp())
        ranked = votes.topk(top, dim=1).indices
        t = truth[begin : begin + chunk_size, None]
        hits1 += int((ranked[:, :1] == t).sum())
        hits5 += int((ranked == t).any(dim=1).sum())
    result: dict[str, Any] = {"top1": 100.0 * hits1 / len(val)}
    if num_classes >= 5:
        result["top5"] = 100.0 * hits5 / len(val)
    result.update(
        k=int(k_used),
        temperature=float(temperature),
        num_classes=int(num_classes),
        num_train=len(train_set),
        num_val=len(val_set),
        pooling=pooling_name(backbone),
        feature_dim=int(train.shape[1]),
        image_size=int(image_size),
        centre_crop=bool(centre_crop),
        seconds=time.perf_counter() - start,
    )
    return result


def _topk_hits(proba: np.ndarray, columns: np.ndarray, truth: np.ndarray, k: int) -> int:
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return int((columns[order] == truth[:, None]).any(axis=1).sum())


def run_linear(
    backbone: nn.Module,
    train_set: Sequence[Any],
    val_set: Sequence[Any],
    *,
    costs: Sequence[float] = LINEAR_COSTS,
    holdout: float = 0.2,
    max_iter: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    centre_crop: bool = True,
) -> dict[str, Any]:
    """Linear classifier on frozen, cached, globally pooled features: "linear (LR on cached features)".

    A cached-feature version of the A3 linear probe, not the SGD recipe: no augmentation,
    multinomial logistic regression (L-BFGS) on standardised features; C is chosen from
    ``costs`` by top-1 on a stratified ``holdout`` fraction of the training split (first C wins
    a tie; skipped when only one C is given), then the model is refit on the whole training
    split. Returns (percentages): ``top1``, ``top5`` (with at least 5 classes), ``cost``,
    ``holdout_top1`` ``{C: top-1}``, ``classifier``, ``num_classes``, ``num_train``, ``num_val``,
    ``feature_dim``, ``image_size``, ``centre_crop``, ``seconds``.
    """
    if not costs or any(c <= 0 for c in costs):
        raise ConfigError("the linear classifier needs at least one positive C")
    if not 0 < holdout < 1:
        raise ConfigError(f"the held-out fraction must be between 0 and 1, got {holdout}")
    _check_image_size(image_size)
    sk = _sklearn("the linear classification protocol")
    from sklearn.exceptions import ConvergenceWarning

    start = time.perf_counter()
    y_train, y_val, num_classes = _single_labels(train_set, val_set)
    if len(np.unique(y_train)) < 2:
        raise DataError("the training split must contain at least two classes")
    opts = dict(batch_size=batch_size, device=device, cache_dir=cache_dir)
    x_train = _pooled(backbone, train_set, image_size, centre_crop, opts).double().numpy()
    x_val = _pooled(backbone, val_set, image_size, centre_crop, opts).double().numpy()
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std

    def fit(x, y, c):
        return sk.linear_model.LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs").fit(x, y)

    holdout_top1: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        best = float(costs[0])
        if len(costs) > 1:
            counts = np.bincount(y_train)
            stratify = y_train if counts[counts > 0].min() >= 2 else None
            n_held = max(1, round(holdout * len(y_train)))
            if stratify is not None:
                n_held = max(n_held, int((counts > 0).sum()))
            try:
                fit_idx, held_idx = sk.model_selection.train_test_split(
                    np.arange(len(y_train)), test_size=n_held, random_state=seed, stratify=stratify
                )
            except ValueError as exc:
                raise DataError(f"the training split is too small for a held-out part: {exc}") from None
            if len(np.unique(y_train[fit_idx])) < 2:
                raise DataError("the training split is too small for a held-out part")
            scores = []
            for c in costs:
                model = fit(x_train[fit_idx], y_train[fit_idx], c)
                acc = float((model.predict(x_train[held_idx]) == y_train[held_idx]).mean())
                holdout_top1[repr(float(c))] = 100.0 * acc
                scores.append(acc)
            best = float(costs[int(np.argmax(scores))])
        model = fit(x_train, y_train, best)
    n_warnings = _reemit(caught, ConvergenceWarning)
    proba = model.predict_proba(x_val)
    columns = np.asarray(model.classes_)
    result: dict[str, Any] = {"top1": 100.0 * _topk_hits(proba, columns, y_val, 1) / len(y_val)}
    if num_classes >= 5:
        result["top5"] = 100.0 * _topk_hits(proba, columns, y_val, 5) / len(y_val)
    result.update(
        cost=best,
        holdout_top1=holdout_top1,
        classifier="linear (LR on cached features)",
        convergence_warnings=int(n_warnings),
        num_classes=int(num_classes),
        num_train=len(train_set),
        num_val=len(val_set),
        pooling=pooling_name(backbone),
        feature_dim=int(x_train.shape[1]),
        image_size=int(image_size),
        centre_crop=bool(centre_crop),
        seconds=time.perf_counter() - start,
    )
    return result

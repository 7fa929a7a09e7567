"""Frozen-backbone dense linear probe (the Leopart "linear" protocol, scaled down).

Protocol (spec A1.1 adapted to cached features, metric as in A1.6):

1. :func:`extract_features` resizes every image bilinearly (antialiased) and its mask with
   nearest neighbour to ``image_size`` x ``image_size``, normalises with the ImageNet
   statistics and runs the frozen backbone **once** per image (eval mode, ``no_grad``). The
   dense maps are cached as float32 on the CPU. There is no train-time augmentation: the
   cache is what makes the probe cheap, and augmented views would need fresh forwards.
2. :func:`train_linear_probe` trains one 1x1 convolution (``C -> num_classes``) with SGD
   (momentum 0.9, weight decay 1e-4, step decay x0.1) and cross-entropy with ``ignore_index``.
   Logits are bilinearly upsampled to ``train_resolution`` and the masks nearest-downsampled to
   it (Leopart: 100 for 448 px input; the synthetic benchmark: 32 for 64 px input).
3. :func:`evaluate_probe` bilinearly upsamples the **logits** to the mask size before the
   argmax and scores them with :class:`~densessl.eval.metrics.ConfusionMatrix`. The evaluation
   resolution is therefore ``image_size``.
4. :func:`run_linear_probe` does all three with several probe seeds on one feature cache.

Variants on the same cache:

* ``head="fcn"`` (:class:`FCNHead`, :func:`train_fcn_probe`): the "fcn" head Leopart offers
  next to the linear one. Two 3x3 conv-BN-ReLU blocks of ``channels`` (512 in Leopart), the
  input concatenated to their output and fused by another 3x3 conv-BN-ReLU, dropout 0.1, then
  a 1x1 classifier. It runs at the feature resolution and its logits are bilinearly upsampled
  (to ``train_resolution`` in training, to the mask size in evaluation); for a non-linear head
  this is not the same as upsampling the features first, and it is much cheaper.
* :data:`PRESETS` / :func:`resolve_preset`: named recipes. ``"default"`` is the library's
  scaled-down recipe (the synthetic benchmark, spec C5.1: train at half the input size, 3
  seeds, standardised features). ``"leopart"`` is spec A1.1: 448 px input, training at
  100x100, 25 epochs with the lr x0.1 at epoch 20, SGD lr 0.1 for a ResNet and 0.01 for a ViT,
  batch 60, seed 400 and raw (not standardised) features. What the recipe cannot reproduce on
  a cache: Leopart's RandomResizedCrop(448, 0.8-1) and flip augmentation, and its dilated
  ResNet-50 (output stride 16); the backbone is used as loaded.
* :func:`run_probe` is :func:`run_linear_probe` with a choice of head and an on-disk feature
  cache (``cache_dir``); :func:`probe_features` trains and scores on features already extracted.

Backbone contract: a ``torch.nn.Module`` whose ``forward(x)`` maps a normalised (B, 3, H, W)
batch to a dense map (B, C, h, w), with an attribute ``out_channels == C``.

Feature standardisation (``standardize=True``, the default): each channel is shifted and scaled
by its mean and standard deviation over the *training* features before the 1x1 conv. Without
it the best learning rate depends on the feature scale, and random-init and pre-trained
backbones (whose scales differ by orders of magnitude) would each need their own lr. The
statistics are folded into the returned conv, so the head applies to raw features and the
identical transform reaches the evaluation features automatically.

Nearest resizing uses ``"nearest-exact"`` (pixel-centre sampling, as PIL and OpenCV do), which
only ever copies existing label values, so ``ignore_index`` pixels stay ignore pixels.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densessl.errors import ConfigError
from densessl.eval.features import extract
from densessl.eval.features import nearest as _nearest
from densessl.eval.metrics import AbsentPolicy, ConfusionMatrix

__all__ = [
    "PRESETS",
    "FCNHead",
    "evaluate_probe",
    "extract_features",
    "probe_features",
    "resolve_preset",
    "run_linear_probe",
    "run_probe",
    "train_fcn_probe",
    "train_linear_probe",
]

Sample = tuple[np.ndarray, np.ndarray]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    samples: Sequence[Sample],
    image_size: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense maps and resized masks of ``(image, mask)`` samples (see :mod:`densessl.eval.features`).

    Returns ``(features, masks)``: float32 (N, C, h, w) and uint8 (N, image_size, image_size),
    both on the CPU.
    """
    result = extract(backbone, samples, image_size, batch_size=batch_size, device=device, cache_dir=cache_dir)
    if result.masks is None:
        raise ValueError("extract_features needs (image, mask) samples")
    return result.dense, result.masks


def _channel_stats(features: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over (N, h, w), accumulated in float64 chunk by chunk."""
    c = features.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, features.shape[0], chunk):
        x = features[start : start + chunk].double()
        s += x.sum(dim=(0, 2, 3))
        sq += x.square().sum(dim=(0, 2, 3))
    count = features.shape[0] * features.shape[2] * features.shape[3]
    mean = s / count
    var = (sq / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    # A channel that is constant on the training set (e.g. a dead ReLU) carries no signal; scaling
    # it by 1/~0 would blow up any tiny difference it shows on the evaluation set.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean, std


def train_linear_probe(
    features: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    *,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    train_resolution: int,
    ignore_index: int = 255,
    milestones: Sequence[int] | None = None,
    standardize: bool = True,
    device: str | torch.device = "cpu",
) -> nn.Conv2d:
    """Train a 1x1 conv ``C -> num_classes`` on cached dense features; return it on the CPU.

    ``features`` is (N, C, h, w) float, ``masks`` is (N, H, W) integer labels (``ignore_index``
    is skipped by the loss). Each step takes a shuffled batch, applies the conv, bilinearly
    upsamples the logits to ``train_resolution`` and computes cross-entropy against masks that
    were nearest-resized to ``train_resolution`` once up front.

    The schedule is SGD with momentum and weight decay; the lr is multiplied by 0.1 at each epoch
    in ``milestones``. ``None`` means one step at ``round(0.8 * epochs)`` (Leopart: epoch 20 of
    25); pass ``()`` for a constant lr. The weights start from N(0, 0.01) with zero bias.

    With ``standardize=True`` the features are standardised per channel with statistics of
    ``features`` and those statistics are folded into the returned conv, which therefore applies
    to raw features. On the CPU the result is a deterministic function of ``seed`` and the data.
    """
    if features.ndim != 4 or masks.ndim != 3 or features.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected features (N, C, h, w) and masks (N, H, W), got {tuple(features.shape)} "
            f"and {tuple(masks.shape)}"
        )
    n, c = features.shape[:2]
    device = torch.device(device)
    if milestones is None:
        milestones = [round(0.8 * epochs)] if epochs > 1 else []

    if standardize:
        mean, std = _channel_stats(features)
    else:
        mean, std = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    mean_f = mean.float().view(1, c, 1, 1).to(device)
    inv_std_f = (1.0 / std).float().view(1, c, 1, 1).to(device)

    targets = _nearest(masks, train_resolution).long()

    gen = torch.Generator().manual_seed(int(seed))
    head = nn.Conv2d(c, num_classes, kernel_size=1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    head.to(device).train()
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)

    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            y = targets[idx].to(device, non_blocking=True)
            if not bool((y != ignore_index).any()):
                # CE's mean over zero counted pixels is NaN; such a batch has nothing to teach.
                continue
            x = features[idx].to(device, non_blocking=True)
            x = (x - mean_f) * inv_std_f
            # Bilinear interpolation is linear with weights summing to 1 and the 1x1 conv is a
            # per-pixel affine map, so conv-then-upsample equals upsample-then-conv exactly (up to
            # rounding). Convolving first works on h*w pixels instead of train_resolution**2 and
            # upsamples num_classes channels instead of C, which is much cheaper.
            logits = head(x)
            if logits.shape[-2:] != y.shape[-2:]:
                logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()

    # Fold the standardisation into the conv: W (x - m) / s + b == (W / s) x + (b - W m / s).
    head = head.cpu().eval()
    with torch.no_grad():
        w = head.weight.double()[:, :, 0, 0]
        scaled = w / std.view(1, c)
        b = head.bias.double() - scaled @ mean
        head.weight.copy_(scaled.view(num_classes, c, 1, 1).float())
        head.bias.copy_(b.float())
    for p in head.parameters():
        p.requires_grad_(False)
    return head


@torch.no_grad()
def evaluate_probe(
    head: nn.Module,
    features: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> dict:
    """Score ``head`` on cached features against full-resolution masks.

    Logits are bilinearly upsampled to the mask size (the evaluation resolution) before the
    argmax, and every pixel of the split is accumulated into one confusion matrix. Returns
    :meth:`ConfusionMatrix.compute`'s dict (fractions in [0, 1]) plus ``eval_resolution``.
    """
    device = torch.device(device)
    was_training = head.training
    head.to(device).eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    size = tuple(masks.shape[-2:])
    try:
        for start in range(0, features.shape[0], batch_size):
            x = features[start : start + batch_size].to(device)
            logits = head(x.float())
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            cm.update(logits.argmax(dim=1), masks[start : start + batch_size].to(device))
    finally:
        head.train(was_training)
    result = cm.compute(absent=absent)
    result["eval_resolution"] = list(size)
    return result


def run_linear_probe(
    backbone: nn.Module,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    num_classes: int,
    **options: Any,
) -> dict:
    """Extract features once, train and evaluate one linear probe per seed, summarise.

    Returns a dict of plain Python values (metrics are fractions in [0, 1]):
    ``miou`` (mean over seeds), ``miou_std`` (sample std over seeds, 0 for one seed),
    ``miou_per_seed``, ``pixel_acc`` (mean), ``pixel_acc_per_seed``, ``mean_acc`` and ``fwiou``
    (means), ``iou_per_class`` (per-class mean over seeds), ``num_classes``, ``image_size``
    (also the evaluation resolution), ``train_resolution``, ``feature_shape`` ``[C, h, w]``,
    ``seeds``, ``absent``, ``num_train``, ``num_val`` and ``seconds`` (wall time, extraction
    included).

    The keyword ``options`` are those of :func:`run_probe` (``image_size``, ``epochs``, ``lr``,
    ``batch_size``, ``train_resolution`` required); the head is the linear one.
    """
    result = run_probe(backbone, train_samples, val_samples, num_classes, head="linear", **options)
    result.pop("head")
    return result


# ----------------------------------------------------------------------------------------------
# recipes
# ----------------------------------------------------------------------------------------------

HeadKind = Literal["linear", "fcn"]

#: Named probe recipes. ``None`` entries are derived by :func:`resolve_preset`: ``image_size``
#: from the data set (448 for real photographs, the native size of the synthetic scenes),
#: ``train_resolution`` as ``max(image_size // 2, 8)``, ``lr`` from the architecture and
#: ``milestones`` as one step at ``round(0.8 * epochs)`` (Leopart: epoch 20 of 25).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "image_size": None,
        "train_resolution": None,
        "epochs": 25,
        "lr": 0.1,
        "milestones": None,
        "batch_size": 64,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "seeds": (0, 1, 2),
        "head": "linear",
        "fcn_channels": 128,
        "dropout": 0.1,
        "standardize": True,
    },
    "leopart": {
        "image_size": 448,
        "train_resolution": 100,
        "epochs": 25,
        "lr": None,  # 0.1 for a ResNet (Leopart's densecl.yml), 0.01 for a ViT
        "milestones": None,
        "batch_size": 60,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "seeds": (400,),
        "head": "linear",
        "fcn_channels": 512,
        "dropout": 0.1,
        "standardize": False,
    },
}

_LEOPART_LR = {"resnet": 0.1, "vit": 0.01}


def resolve_preset(
    name: str | None = "default",
    *,
    arch: str | None = None,
    dataset_image_size: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The settings of preset ``name`` (``None``: "default") with ``overrides`` applied.

    Overrides whose value is ``None`` are ignored, so parsed command-line options can be passed
    straight through. The result has every key of the preset, concrete: ``image_size`` falls
    back to ``dataset_image_size``, ``train_resolution`` to ``max(image_size // 2, 8)``, a
    preset ``lr`` of ``None`` to 0.01 when ``arch`` names a ViT and 0.1 otherwise, and
    ``milestones`` stays ``None`` (one step at 80 % of the epochs) unless given. Unknown preset
    names and settings raise :class:`~densessl.config.ConfigError`.
    """
    name = name or "default"
    if name not in PRESETS:
        raise ConfigError(f"unknown probe preset {name!r}; valid presets: {', '.join(PRESETS)}")
    settings = dict(PRESETS[name])
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ConfigError(f"unknown probe setting(s) {', '.join(unknown)}; valid: {', '.join(settings)}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings["image_size"] is None:
        if dataset_image_size is None:
            raise ConfigError(f"probe preset {name!r} needs an image size for this data set")
        settings["image_size"] = int(dataset_image_size)
    if settings["train_resolution"] is None:
        settings["train_resolution"] = max(int(settings["image_size"]) // 2, 8)
    if settings["lr"] is None:
        settings["lr"] = _LEOPART_LR["vit" if arch and arch.startswith("vit") else "resnet"]
    if settings["head"] not in ("linear", "fcn"):
        raise ConfigError(f"probe head must be 'linear' or 'fcn', got {settings['head']!r}")
    settings["seeds"] = tuple(int(s) for s in settings["seeds"])
    if settings["milestones"] is not None:
        settings["milestones"] = tuple(int(m) for m in settings["milestones"])
    return settings


# ----------------------------------------------------------------------------------------------
# the FCN head
# ----------------------------------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FCNHead(nn.Module):
    """``num_convs`` conv-BN-ReLU blocks, optional input concatenation and fusion, dropout, 1x1 conv.

    With the defaults (2 convs of 512 channels, kernel 3, ``concat_input``, dropout 0.1) this is
    the "fcn" head of Leopart's probe. Output: (B, num_classes, h, w) logits at input resolution.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 512,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be at least 1, got {num_convs}")
        blocks = [
            _conv_bn_relu(in_channels if i == 0 else channels, channels, kernel_size)
            for i in range(num_convs)
        ]
        self.convs = nn.Sequential(*blocks)
        self.fuse = _conv_bn_relu(in_channels + channels, channels, kernel_size) if concat_input else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.fuse is not None:
            y = self.fuse(torch.cat([x, y], dim=1))
        return self.classifier(self.dropout(y))


class _Standardize(nn.Module):
    """``(x - mean) / std`` per channel, with fixed statistics."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().view(1, -1, 1, 1))
        self.register_buffer("inv_std", (1.0 / std).float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


def train_fcn_probe(
    features: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    *,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
    train_resolution: int,
    channels: int = 512,
    dropout: float = 0.1,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    ignore_index: int = 255,
    milestones: Sequence[int] | None = None,
    standardize: bool = True,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train an :class:`FCNHead` on cached dense features; return it on the CPU in eval mode.

    Same data, loss and schedule as :func:`train_linear_probe` (SGD with momentum and weight
    decay, lr x0.1 at each of ``milestones``, cross-entropy with ``ignore_index`` against masks
    nearest-resized to ``train_resolution``), with the head's logits bilinearly upsampled to
    ``train_resolution``. The conv weights start from PyTorch's default initialisation and the
    classifier from N(0, 0.01). With ``standardize=True`` the returned module is
    ``Sequential(standardisation, head)``, so it applies to raw features. On the CPU the result
    is a deterministic function of ``seed`` and the data; the global RNG is left untouched.
    """
    if features.ndim != 4 or masks.ndim != 3 or features.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected features (N, C, h, w) and masks (N, H, W), got {tuple(features.shape)} "
            f"and {tuple(masks.shape)}"
        )
    n, c = features.shape[:2]
    device = torch.device(device)
    if milestones is None:
        milestones = [round(0.8 * epochs)] if epochs > 1 else []
    targets = _nearest(masks, train_resolution).long()
    gen = torch.Generator().manual_seed(int(seed))
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        head = FCNHead(c, num_classes, channels=channels, dropout=dropout)
        with torch.no_grad():
            head.classifier.weight.normal_(0.0, 0.01)
            head.classifier.bias.zero_()
        if standardize:
            mean, std = _channel_stats(features)
            model: nn.Module = nn.Sequential(_Standardize(mean, std), head)
        else:
            model = nn.Sequential(head)
        model.to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                y = targets[idx].to(device, non_blocking=True)
                if not bool((y != ignore_index).any()):
                    continue  # CE's mean over zero counted pixels is NaN; nothing to learn here
                if idx.numel() * features.shape[-2] * features.shape[-1] < 2:
                    continue  # batch norm cannot normalise a single value
                logits = model(features[idx].to(device, non_blocking=True))
                if logits.shape[-2:] != y.shape[-2:]:
                    logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
                loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
    model = model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------
# running a probe
# ----------------------------------------------------------------------------------------------


def probe_features(
    train_features: torch.Tensor,
    train_masks: torch.Tensor,
    val_features: torch.Tensor,
    val_masks: torch.Tensor,
    num_classes: int,
    *,
    head: HeadKind = "linear",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int,
    lr: float,
    batch_size: int,
    train_resolution: int,
    device: str | torch.device = "cpu",
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    milestones: Sequence[int] | None = None,
    standardize: bool = True,
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
    fcn_channels: int = 512,
    dropout: float = 0.1,
) -> dict:
    """Train and score one probe per seed on cached features; the summary of :func:`run_probe`.

    The evaluation resolution is the size of ``val_masks``. ``seconds`` here covers training
    and scoring only.
    """
    if len(seeds) == 0:
        raise ValueError("a probe needs at least one seed")
    if head not in ("linear", "fcn"):
        raise ValueError(f"head must be 'linear' or 'fcn', got {head!r}")
    t0 = time.perf_counter()
    common = dict(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        momentum=momentum,
        train_resolution=train_resolution,
        ignore_index=ignore_index,
        milestones=milestones,
        standardize=standardize,
        device=device,
    )
    runs = []
    for seed in seeds:
        if head == "linear":
            model = train_linear_probe(train_features, train_masks, num_classes, seed=seed, **common)
        else:
            model = train_fcn_probe(
                train_features,
                train_masks,
                num_classes,
                seed=seed,
                channels=fcn_channels,
                dropout=dropout,
                **common,
            )
        runs.append(
            evaluate_probe(model, val_features, val_masks, num_classes, ignore_index, absent, device=device)
        )

    mious = [r["miou"] for r in runs]
    accs = [r["pixel_acc"] for r in runs]
    per_class = np.array([r["iou_per_class"] for r in runs], dtype=np.float64)
    with warnings.catch_warnings():
        # A class absent from the val split is NaN under absent="nan" for every seed alike.
        warnings.simplefilter("ignore", RuntimeWarning)
        iou_per_class = [float(v) for v in np.nanmean(per_class, axis=0)] if per_class.size else []
    result = {
        "miou": float(np.mean(mious)),
        "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else 0.0,
        "miou_per_seed": [float(v) for v in mious],
        "pixel_acc": float(np.mean(accs)),
        "pixel_acc_per_seed": [float(v) for v in accs],
        "mean_acc": float(np.mean([r["mean_acc"] for r in runs])),
        "fwiou": float(np.mean([r["fwiou"] for r in runs])),
        "iou_per_class": iou_per_class,
        "num_classes": int(num_classes),
        "image_size": int(val_masks.shape[-1]),
        "train_resolution": int(train_resolution),
        "feature_shape": [int(s) for s in train_features.shape[1:]],
        "seeds": [int(s) for s in seeds],
        "absent": absent,
        "num_train": int(train_features.shape[0]),
        "num_val": int(val_features.shape[0]),
        "head": head,
        "seconds": time.perf_counter() - t0,
    }
    return result


def run_probe(
    backbone: nn.Module,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    num_classes: int,
    *,
    head: HeadKind = "linear",
    image_size: int,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int,
    lr: float,
    batch_size: int,
    train_resolution: int,
    device: str | torch.device = "cpu",
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    milestones: Sequence[int] | None = None,
    standardize: bool = True,
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
    extract_batch_size: int = 64,
    fcn_channels: int = 512,
    dropout: float = 0.1,
    cache_dir: str | Path | None = None,
) -> dict:
    """Extract features once (or read them from ``cache_dir``), train and score a probe per seed.

    ``head`` is ``"linear"`` (a 1x1 conv, :func:`train_linear_probe`) or ``"fcn"``
    (:class:`FCNHead` with ``fcn_channels`` and ``dropout``, :func:`train_fcn_probe`). Returns the
    dict described in :func:`run_linear_probe` plus ``head``; ``seconds`` includes extraction.
    """
    if len(seeds) == 0:
        raise ValueError("a probe needs at least one seed")
    t0 = time.perf_counter()
    train_f, train_m = extract_features(
        backbone, train_samples, image_size, extract_batch_size, device, cache_dir
    )
    val_f, val_m = extract_features(backbone, val_samples, image_size, extract_batch_size, device, cache_dir)
    result = probe_features(
        train_f,
        train_m,
        val_f,
        val_m,
        num_classes,
        head=head,
        seeds=seeds,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        train_resolution=train_resolution,
        device=device,
        weight_decay=weight_decay,
        momentum=momentum,
        milestones=milestones,
        standardize=standardize,
        ignore_index=ignore_index,
        absent=absent,
        fcn_channels=fcn_channels,
        dropout=dropout,
    )
    result["image_size"] = int(image_size)
    result["seconds"] = time.perf_counter() - t0
    return result

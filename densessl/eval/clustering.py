"""Unsupervised segmentation of frozen dense features (``seg-cluster``): k-means and segment retrieval.

**K-means (over)clustering** (spec A5, after Leopart's overclustering; run on the cached dense
features of the *validation* split, as both papers fit k-means on the split they score):

1. Every patch feature of the split is one point. The points are standardised per channel and
   reduced by PCA to ``pca_dim`` (50) dimensions (skipped when there are no more channels
   than that: k-means is invariant to the rotation PCA would apply).
2. Lloyd k-means with K clusters, ``n_init`` restarts (Leopart: nredo 5) of at most
   ``max_iter`` (100) iterations each, one run per seed (5 seeds). It is scikit-learn's
   ``KMeans`` (``MiniBatchKMeans`` with ``minibatch=True``, MaskContrast's choice, for millions
   of points).
3. The cluster map is upsampled with nearest neighbour to the evaluation resolution
   (``eval_resolution``; default the mask size, Leopart uses 100) where the masks are
   nearest-resized; GT 255 pixels are left out.
4. Matching over the whole split (:mod:`densessl.eval.metrics`): K no larger than the number of
   classes uses Hungarian matching on IoU; larger K (overclustering, e.g. 4x the classes)
   sends every cluster to the class it has the highest precision with (many-to-one). Unmatched
   clusters count as wrong. Then mIoU and pixel accuracy as in A1.6.

**Segment retrieval** (spec A5, MaskContrast's retrieval without a saliency model): the region
of each image is taken from the ground truth, an *oracle* region, instead of a predicted
saliency mask:

* ``regions="foreground"`` (MaskContrast's setting; needs a background class): one region per
  image, its pixels that are neither background nor void. A training region is stored as the
  mean of the features it covers (each patch weighted by the share of the region's pixels in
  it), L2-normalised, and labelled with its majority class. A validation region takes the
  label of its most cosine-similar stored region (1-NN), painted over the region; all other
  pixels are predicted as background.
* ``regions="classes"`` (for sets without a background class): one region per class present
  in the image, each labelled with its class; every labelled pixel is then predicted by the
  1-NN label of its own region.

``subset`` adds ``miou_subset``, the mean IoU over a few classes (MaskContrast's "7 classes":
aeroplane, bus, car, cat, cow, person and bottle on PASCAL VOC, see :data:`VOC_SEVEN`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from densessl.errors import ConfigError
from densessl.eval.features import nearest
from densessl.eval.metrics import (
    UNMATCHED,
    AbsentPolicy,
    ConfusionMatrix,
    hungarian_from_overlap,
    many_to_one_from_overlap,
    overlap_matrix,
    remap,
)

__all__ = [
    "VOC_SEVEN",
    "cluster_patches",
    "evaluate_clusters",
    "reduce_features",
    "run_clustering",
    "segment_embeddings",
    "segment_retrieval",
]

#: PASCAL VOC class indices of MaskContrast's "7 classes" retrieval setting.
VOC_SEVEN: tuple[int, ...] = (1, 5, 6, 7, 8, 10, 15)  # aeroplane bottle bus car cat cow person

Matching = Literal["auto", "hungarian", "many-to-one"]


def _sklearn():
    try:
        import sklearn.cluster
        import sklearn.decomposition
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the dev extra
        raise ConfigError("k-means clustering needs scikit-learn (pip install scikit-learn)") from exc
    return sklearn


def reduce_features(features: torch.Tensor, pca_dim: int | None = 50, standardize: bool = True) -> np.ndarray:
    """Patch features (N, C, h, w) as points (N * h * w, d): standardised, PCA to ``pca_dim``.

    Points are ordered image by image, row by row. ``pca_dim=None`` or ``>= C`` skips the PCA.
    """
    n, c, h, w = features.shape
    points = features.float().permute(0, 2, 3, 1).reshape(-1, c).numpy().copy()
    if standardize:
        mean = points.mean(axis=0, dtype=np.float64)
        std = points.std(axis=0, dtype=np.float64)
        points -= mean.astype(np.float32)
        points /= np.where(std > 1e-12, std, 1.0).astype(np.float32)
    if pca_dim is not None and pca_dim < c and pca_dim < points.shape[0]:
        pca = _sklearn().decomposition.PCA(n_components=pca_dim, random_state=0)
        points = pca.fit_transform(points)
    return np.ascontiguousarray(points, dtype=np.float32)


def cluster_patches(
    points: np.ndarray,
    num_clusters: int,
    *,
    seed: int,
    n_init: int = 5,
    max_iter: int = 100,
    minibatch: bool = False,
) -> np.ndarray:
    """K-means labels (P,) int64 of ``points`` (P, d); a deterministic function of ``seed``."""
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be positive, got {num_clusters}")
    if num_clusters > points.shape[0]:
        raise ValueError(f"cannot make {num_clusters} clusters of {points.shape[0]} patches")
    cluster = _sklearn().cluster
    if minibatch:
        km = cluster.MiniBatchKMeans(
            n_clusters=num_clusters, n_init=n_init, max_iter=max_iter, batch_size=1024, random_state=seed
        )
    else:
        km = cluster.KMeans(n_clusters=num_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # Duplicate points (e.g. constant features) make sklearn warn about fewer distinct clusters.
        warnings.simplefilter("ignore")
        labels = km.fit_predict(points)
    return labels.astype(np.int64)


def evaluate_clusters(
    cluster_maps: torch.Tensor,
    masks: torch.Tensor,
    num_clusters: int,
    num_classes: int,
    *,
    matching: Matching = "auto",
    eval_resolution: int | None = None,
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
    chunk: int = 256,
) -> dict[str, Any]:
    """Match clusters to classes over the split and score them.

    ``cluster_maps`` (N, h, w) integer cluster ids, ``masks`` (N, H, W). Both are nearest-resized
    to ``eval_resolution`` (default: the mask size). ``matching="auto"`` is Hungarian when
    ``num_clusters <= num_classes``, many-to-one otherwise. Returns
    :meth:`ConfusionMatrix.compute`'s dict plus ``k``, ``matching``, ``mapping`` and
    ``eval_resolution``.
    """
    if matching == "auto":
        matching = "hungarian" if num_clusters <= num_classes else "many-to-one"
    if matching not in ("hungarian", "many-to-one"):
        raise ValueError(f"matching must be 'auto', 'hungarian' or 'many-to-one', got {matching!r}")
    size = (eval_resolution, eval_resolution) if eval_resolution else tuple(masks.shape[-2:])

    def chunks():
        for start in range(0, masks.shape[0], chunk):
            target = masks[start : start + chunk]
            if tuple(target.shape[-2:]) != size:
                target = nearest(target, size)
            pred = cluster_maps[start : start + chunk].to(torch.int32)
            if tuple(pred.shape[-2:]) != size:
                pred = nearest(pred, size)
            yield pred.long(), target

    overlap = np.zeros((num_clusters, num_classes), dtype=np.int64)
    for pred, target in chunks():
        overlap += overlap_matrix(pred, target, num_clusters, num_classes, ignore_index)
    if matching == "hungarian":
        mapping = hungarian_from_overlap(overlap)
    else:
        mapping = many_to_one_from_overlap(overlap)
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, unmatched_index=UNMATCHED)
    for pred, target in chunks():
        cm.update(remap(pred, mapping), target)
    result = cm.compute(absent=absent)
    result.update(
        {
            "k": int(num_clusters),
            "matching": matching,
            "mapping": [int(v) for v in mapping],
            "eval_resolution": [int(s) for s in size],
        }
    )
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    mious = [r["miou"] for r in runs]
    accs = [r["pixel_acc"] for r in runs]
    per_class = np.array([r["iou_per_class"] for r in runs], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        iou_per_class = [float(v) for v in np.nanmean(per_class, axis=0)]
    return {
        "k": runs[0]["k"],
        "matching": runs[0]["matching"],
        "miou": float(np.mean(mious)),
        "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else 0.0,
        "miou_per_seed": [float(v) for v in mious],
        "pixel_acc": float(np.mean(accs)),
        "pixel_acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
        "pixel_acc_per_seed": [float(v) for v in accs],
        "iou_per_class": iou_per_class,
    }


def run_clustering(
    features: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    *,
    clusters: Sequence[int] | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    pca_dim: int | None = 50,
    standardize: bool = True,
    n_init: int = 5,
    max_iter: int = 100,
    minibatch: bool = False,
    matching: Matching = "auto",
    eval_resolution: int | None = None,
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
) -> dict[str, Any]:
    """K-means of the patches of ``features`` (N, C, h, w) scored against ``masks`` (N, H, W).

    ``clusters`` lists the K values (default: the number of classes, scored with Hungarian
    matching, and 4x that, scored many-to-one; spec C5.3). Returns ``clusterings``, one summary
    per K (``k``, ``matching``, ``miou`` / ``pixel_acc`` mean, std and per seed,
    ``iou_per_class``), and ``seeds``, ``pca_dim``, ``num_images``, ``feature_shape``,
    ``eval_resolution`` and ``seconds``.
    """
    if not seeds:
        raise ValueError("clustering needs at least one seed")
    t0 = time.perf_counter()
    ks = list(clusters) if clusters else [num_classes, 4 * num_classes]
    n, c, h, w = features.shape
    points = reduce_features(features, pca_dim, standardize)
    summaries = []
    for k in ks:
        runs = []
        for seed in seeds:
            labels = cluster_patches(
                points, int(k), seed=int(seed), n_init=n_init, max_iter=max_iter, minibatch=minibatch
            )
            maps = torch.from_numpy(labels).reshape(n, h, w)
            runs.append(
                evaluate_clusters(
                    maps,
                    masks,
                    int(k),
                    num_classes,
                    matching=matching,
                    eval_resolution=eval_resolution,
                    ignore_index=ignore_index,
                    absent=absent,
                )
            )
        summaries.append(_summary(runs))
    size = eval_resolution or int(masks.shape[-1])
    return {
        "clusterings": summaries,
        "seeds": [int(s) for s in seeds],
        "pca_dim": None if pca_dim is None or pca_dim >= c else int(pca_dim),
        "num_images": int(n),
        "feature_shape": [int(c), int(h), int(w)],
        "eval_resolution": int(size),
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------------------------
# segment retrieval
# ----------------------------------------------------------------------------------------------

Regions = Literal["foreground", "classes"]


def _region_stack(
    masks: torch.Tensor, num_classes: int, regions: Regions, background: int, ignore_index: int
):
    """(B, R, H, W) float region indicators.

    ``classes``: R = num_classes, region r = the pixels of class r. ``foreground``: R = 1, the
    pixels that are neither background nor void.
    """
    m = masks.long()
    valid = m != ignore_index
    if regions == "classes":
        labels = torch.where(valid, m, torch.zeros_like(m))
        onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float() * valid[:, None].float()
        return onehot
    fg = valid & (m != background)
    return fg[:, None].float()


@torch.no_grad()
def segment_embeddings(
    features: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    *,
    regions: Regions = "foreground",
    background: int = 0,
    ignore_index: int = 255,
    chunk: int = 64,
) -> dict[str, torch.Tensor]:
    """The oracle regions of every image and their pooled, L2-normalised features.

    Returns ``embeddings`` (S, C), ``labels`` (S,) (the region's class, or its majority class
    for ``foreground`` regions), ``image`` (S,) (index of the image) and ``region`` (S,) (the
    class of a ``classes`` region, -1 for a ``foreground`` one). Empty regions are left out.
    """
    if regions not in ("foreground", "classes"):
        raise ValueError(f"regions must be 'foreground' or 'classes', got {regions!r}")
    n, c, h, w = features.shape
    per_image = (num_classes if regions == "classes" else 1) * masks.shape[-2] * masks.shape[-1]
    chunk = max(1, min(chunk, (1 << 25) // per_image))  # at most 128 MiB of region indicators
    embs, labels, images, region_ids = [], [], [], []
    for start in range(0, n, chunk):
        m = masks[start : start + chunk]
        f = features[start : start + chunk].float()
        ind = _region_stack(m, num_classes, regions, background, ignore_index)  # (B, R, H, W)
        pixels = ind.sum(dim=(2, 3))  # (B, R)
        weights = F.adaptive_avg_pool2d(ind, (h, w))  # share of each patch covered by the region
        pooled = (
            torch.einsum("brhw,bchw->brc", weights, f) / weights.sum(dim=(2, 3)).clamp_min(1e-12)[..., None]
        )
        present = pixels > 0
        b_idx, r_idx = present.nonzero(as_tuple=True)
        embs.append(F.normalize(pooled[b_idx, r_idx], dim=-1))
        images.append(b_idx + start)
        if regions == "classes":
            labels.append(r_idx)
            region_ids.append(r_idx)
        else:
            mm = m.long()
            counted = (mm != ignore_index) & (mm != background)
            majority = []
            for b in b_idx.tolist():
                values = mm[b][counted[b]]
                majority.append(int(torch.bincount(values, minlength=num_classes).argmax()))
            labels.append(torch.tensor(majority, dtype=torch.long))
            region_ids.append(torch.full_like(b_idx, -1))
    return {
        "embeddings": torch.cat(embs) if embs else torch.zeros(0, c),
        "labels": torch.cat(labels).long() if labels else torch.zeros(0, dtype=torch.long),
        "image": torch.cat(images).long() if images else torch.zeros(0, dtype=torch.long),
        "region": torch.cat(region_ids).long() if region_ids else torch.zeros(0, dtype=torch.long),
    }


@torch.no_grad()
def segment_retrieval(
    train_features: torch.Tensor,
    train_masks: torch.Tensor,
    val_features: torch.Tensor,
    val_masks: torch.Tensor,
    num_classes: int,
    *,
    regions: Regions = "foreground",
    background: int = 0,
    subset: Sequence[int] | None = None,
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
) -> dict[str, Any]:
    """1-NN retrieval of oracle regions (see the module docstring), scored at the mask size.

    Returns :meth:`ConfusionMatrix.compute`'s dict plus ``regions``, ``memory_size``,
    ``num_queries``, ``miou_subset`` and ``subset`` (when ``subset`` is given) and ``seconds``.
    """
    t0 = time.perf_counter()
    memory = segment_embeddings(
        train_features,
        train_masks,
        num_classes,
        regions=regions,
        background=background,
        ignore_index=ignore_index,
    )
    if memory["embeddings"].shape[0] == 0:
        raise ValueError("segment retrieval found no region in the training split")
    queries = segment_embeddings(
        val_features,
        val_masks,
        num_classes,
        regions=regions,
        background=background,
        ignore_index=ignore_index,
    )
    predicted = torch.zeros(0, dtype=torch.long)
    if queries["embeddings"].shape[0]:
        sims = queries["embeddings"] @ memory["embeddings"].T
        predicted = memory["labels"][sims.argmax(dim=1)]
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    by_image: dict[int, list[tuple[int, int]]] = {}
    rows = zip(queries["image"].tolist(), queries["region"].tolist(), predicted.tolist(), strict=True)
    for img, region, label in rows:
        by_image.setdefault(img, []).append((region, label))
    for i in range(val_masks.shape[0]):
        m = val_masks[i].long()
        pred = torch.full_like(m, background if regions == "foreground" else 0)
        for region, label in by_image.get(i, []):
            if region < 0:
                pred[(m != ignore_index) & (m != background)] = label
            else:
                pred[m == region] = label
        cm.update(pred, m)
    result = cm.compute(absent=absent)
    result.update(
        {
            "regions": regions,
            "memory_size": int(memory["embeddings"].shape[0]),
            "num_queries": int(queries["embeddings"].shape[0]),
        }
    )
    if subset:
        values = [result["iou_per_class"][i] for i in subset]
        finite = [v for v in values if not math.isnan(v)]
        result["subset"] = [int(i) for i in subset]
        result["miou_subset"] = float(np.mean(finite)) if finite else math.nan
    result["seconds"] = time.perf_counter() - t0
    return result

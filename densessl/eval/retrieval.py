"""Dense nearest-neighbour retrieval mIoU (``seg-nn``): Hummingbird's protocol, scaled down.

Protocol (spec A1.5, on the cached features of :mod:`densessl.eval.features`):

1. **Memory.** Every patch (feature-grid cell) of the training images is stored with its
   L2-normalised feature and a *soft label*: the fraction of the patch's pixels in each class,
   from the mask at the input resolution area-pooled onto the feature grid. Void pixels
   (``ignore_index``) count as class 0 (``void="zero"``, what Hummingbird does, sensible when
   class 0 is the background); with ``void="skip"`` they are left out of the fractions and a
   patch without a single labelled pixel is left out of the memory (for sets whose class 0 is a
   real class: ADE20K, Cityscapes, COCO-Stuff). ``patches_per_image`` keeps a random fixed
   number of patches per image (Hummingbird's bounded memory); ``None`` keeps them all (the
   synthetic benchmark, spec C5.2).
2. **Query.** Every validation patch retrieves its ``k`` (30) most cosine-similar memory
   patches by exact search: matrix products and ``topk`` over chunks of queries and of the
   memory, so memory use stays bounded whatever the sizes (faiss or ScaNN would be
   approximate; at this scale exact search is affordable).
3. **Labels.** The query's class distribution is the average of its neighbours' soft labels
   weighted by ``softmax(cosine / temperature)`` with temperature β = 0.02.
4. **Score.** The patch-grid distributions are bilinearly upsampled to the mask size (the input
   resolution), the argmax is taken and every pixel of the split goes into one
   :class:`~densessl.eval.metrics.ConfusionMatrix` (spec A1.6).

Not reproduced: Hummingbird's augmented passes over the training images (``augmentation_epoch``;
the cache holds one un-augmented pass) and its data-efficiency subsets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densessl.eval.features import extract
from densessl.eval.metrics import AbsentPolicy, ConfusionMatrix

__all__ = ["build_memory", "evaluate_nn", "nn_label_maps", "patch_soft_labels", "run_nn_retrieval"]

VoidMode = Literal["zero", "skip"]

# Elements of one similarity block (queries x memory rows): 2**24 floats = 64 MiB.
_BLOCK_ELEMENTS = 1 << 24


def patch_soft_labels(
    masks: torch.Tensor,
    num_classes: int,
    grid: tuple[int, int],
    *,
    ignore_index: int = 255,
    void: VoidMode = "zero",
    chunk: int = 64,
) -> torch.Tensor:
    """Per-patch class fractions, (N, h, w, num_classes) float32, of (N, H, W) label maps.

    ``grid`` is the feature grid (h, w); each cell's fractions come from area (adaptive average)
    pooling of the one-hot masks. ``void`` as in the module docstring: under ``"skip"`` a cell
    without labelled pixels is all zeros.
    """
    if void not in ("zero", "skip"):
        raise ValueError(f"void must be 'zero' or 'skip', got {void!r}")
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    out = []
    for start in range(0, masks.shape[0], chunk):
        m = masks[start : start + chunk].long()
        valid = m != ignore_index
        labels = torch.where(valid, m, torch.zeros_like(m))
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}; "
                f"found values in [{int(labels.min())}, {int(labels.max())}]"
            )
        onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
        if void == "zero":
            pooled = F.adaptive_avg_pool2d(onehot, grid)
        else:
            onehot = onehot * valid[:, None].float()
            pooled = F.adaptive_avg_pool2d(onehot, grid)
            share = pooled.sum(dim=1, keepdim=True)
            pooled = torch.where(share > 0, pooled / share.clamp_min(1e-12), torch.zeros_like(pooled))
        out.append(pooled.permute(0, 2, 3, 1).contiguous())
    return torch.cat(out)


def build_memory(
    features: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    *,
    patches_per_image: int | None = None,
    ignore_index: int = 255,
    void: VoidMode = "zero",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory bank: ``(keys (M, C), values (M, num_classes))``, float32 on the CPU.

    ``keys`` are the L2-normalised patch features of ``features`` (N, C, h, w), ``values`` their
    soft labels (:func:`patch_soft_labels` of ``masks``). With ``patches_per_image`` each image
    contributes that many patches drawn without replacement (a function of ``seed``).
    """
    if features.ndim != 4 or masks.ndim != 3 or features.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected features (N, C, h, w) and masks (N, H, W), got {tuple(features.shape)} "
            f"and {tuple(masks.shape)}"
        )
    n, c, h, w = features.shape
    keys = F.normalize(features.float().permute(0, 2, 3, 1).reshape(n, h * w, c), dim=-1)
    values = patch_soft_labels(masks, num_classes, (h, w), ignore_index=ignore_index, void=void)
    values = values.reshape(n, h * w, num_classes)
    if patches_per_image is not None and patches_per_image < h * w:
        if patches_per_image < 1:
            raise ValueError(f"patches_per_image must be positive, got {patches_per_image}")
        gen = torch.Generator().manual_seed(int(seed))
        pick = torch.rand(n, h * w, generator=gen).argsort(dim=1)[:, :patches_per_image]
        keys = torch.gather(keys, 1, pick[..., None].expand(-1, -1, c))
        values = torch.gather(values, 1, pick[..., None].expand(-1, -1, num_classes))
    keys = keys.reshape(-1, c)
    values = values.reshape(-1, num_classes)
    labelled = values.sum(dim=1) > 0
    if not bool(labelled.all()):
        keys, values = keys[labelled], values[labelled]
    if keys.shape[0] == 0:
        raise ValueError("the memory bank is empty: no training patch has a labelled pixel")
    return keys.contiguous(), values.contiguous()


@torch.no_grad()
def nn_label_maps(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    *,
    k: int = 30,
    temperature: float = 0.02,
    memory_chunk: int = 65536,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Class distributions (N, num_classes, h, w) of the patches of ``queries`` (N, C, h, w).

    Each patch takes the ``softmax(cosine / temperature)``-weighted average of the soft labels
    ``values`` of its ``k`` nearest ``keys`` (exact search; ``k`` is capped at the memory size).
    ``keys`` must be L2-normalised (as :func:`build_memory` returns them).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    device = torch.device(device)
    n, c, h, w = queries.shape
    if keys.shape[1] != c:
        raise ValueError(f"queries have {c} channels but the memory keys {keys.shape[1]}")
    m = keys.shape[0]
    k = min(int(k), m)
    memory_chunk = max(int(memory_chunk), k)
    q_all = F.normalize(queries.float().permute(0, 2, 3, 1).reshape(-1, c), dim=-1)
    # Bound both the similarity block (queries x memory rows) and the gathered neighbour labels.
    query_chunk = max(1, _BLOCK_ELEMENTS // max(min(m, memory_chunk), k * values.shape[1]))
    keys_d = keys.to(device)
    values_d = values.to(device)
    out = []
    for qs in range(0, q_all.shape[0], query_chunk):
        q = q_all[qs : qs + query_chunk].to(device)
        best_sim = best_idx = None
        for ms in range(0, m, memory_chunk):
            sim = q @ keys_d[ms : ms + memory_chunk].T
            top_sim, top_idx = sim.topk(min(k, sim.shape[1]), dim=1)
            top_idx = top_idx + ms
            if best_sim is not None:
                top_sim = torch.cat([best_sim, top_sim], dim=1)
                top_idx = torch.cat([best_idx, top_idx], dim=1)
                top_sim, order = top_sim.topk(k, dim=1)
                top_idx = torch.gather(top_idx, 1, order)
            best_sim, best_idx = top_sim, top_idx
        weights = torch.softmax(best_sim / temperature, dim=1)
        out.append(torch.einsum("qk,qkc->qc", weights, values_d[best_idx]).cpu())
    labels = torch.cat(out).reshape(n, h, w, -1)
    return labels.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate_nn(
    train_features: torch.Tensor,
    train_masks: torch.Tensor,
    val_features: torch.Tensor,
    val_masks: torch.Tensor,
    num_classes: int,
    *,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    void: VoidMode = "zero",
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Retrieval mIoU of cached features (see the module docstring).

    Returns :meth:`ConfusionMatrix.compute`'s dict plus ``k``, ``temperature``,
    ``memory_size``, ``patches_per_image``, ``void``, ``feature_shape``, ``eval_resolution``
    (the mask size), ``num_train``, ``num_val`` and ``seconds``.
    """
    t0 = time.perf_counter()
    keys, values = build_memory(
        train_features,
        train_masks,
        num_classes,
        patches_per_image=patches_per_image,
        ignore_index=ignore_index,
        void=void,
        seed=seed,
    )
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    size = tuple(val_masks.shape[-2:])
    for start in range(0, val_features.shape[0], batch_size):
        dist = nn_label_maps(
            val_features[start : start + batch_size],
            keys,
            values,
            k=k,
            temperature=temperature,
            device=device,
        )
        if dist.shape[-2:] != size:
            dist = F.interpolate(dist, size=size, mode="bilinear", align_corners=False)
        cm.update(dist.argmax(dim=1), val_masks[start : start + batch_size])
    result = cm.compute(absent=absent)
    result.update(
        {
            "k": int(min(k, keys.shape[0])),
            "temperature": float(temperature),
            "memory_size": int(keys.shape[0]),
            "patches_per_image": None if patches_per_image is None else int(patches_per_image),
            "void": void,
            "feature_shape": [int(s) for s in train_features.shape[1:]],
            "eval_resolution": [int(s) for s in size],
            "num_train": int(train_features.shape[0]),
            "num_val": int(val_features.shape[0]),
            "seconds": time.perf_counter() - t0,
        }
    )
    return result


def run_nn_retrieval(
    backbone: nn.Module,
    train_samples: Sequence[tuple[np.ndarray, np.ndarray]],
    val_samples: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    image_size: int,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    void: VoidMode = "zero",
    ignore_index: int = 255,
    absent: AbsentPolicy = "zero",
    seed: int = 0,
    device: str | torch.device = "cpu",
    extract_batch_size: int = 64,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Extract (or read from ``cache_dir``) dense features of both splits, then :func:`evaluate_nn`.

    Adds ``image_size`` (the input resolution, also the evaluation resolution); ``seconds``
    includes the extraction.
    """
    t0 = time.perf_counter()
    feats = []
    for samples in (train_samples, val_samples):
        fs = extract(
            backbone, samples, image_size, batch_size=extract_batch_size, device=device, cache_dir=cache_dir
        )
        if fs.masks is None:
            raise ValueError("seg-nn needs (image, mask) samples")
        feats.append(fs)
    result = evaluate_nn(
        feats[0].dense,
        feats[0].masks,
        feats[1].dense,
        feats[1].masks,
        num_classes,
        k=k,
        temperature=temperature,
        patches_per_image=patches_per_image,
        void=void,
        ignore_index=ignore_index,
        absent=absent,
        seed=seed,
        batch_size=extract_batch_size,
        device=device,
    )
    result["image_size"] = int(image_size)
    result["seconds"] = time.perf_counter() - t0
    return result

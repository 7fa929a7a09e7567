"""Whether a scene set gives dense features something to do (evaluation spec C2).

Dense pre-training should only win where images hold several objects, objects cover several
cells of the feature map the probes read, and the crops of pre-training often cut objects or
frame different ones. :func:`scene_statistics` measures these on rendered scenes and on the
crops a recipe's view sampler draws from them:

* ``objects_per_image``: visible object instances (ignore band and background excluded);
* ``cells_per_object``: an object's visible area in cells of the probe's feature map
  (``image_size / stride`` cells a side), and the share of objects covering at least 2 and 4;
* ``cut_by_crop``: the share of the objects a crop touches that it cuts (part inside, part out);
* ``different_main_object``: how often the two views' largest visible objects are different
  instances, the inconsistency of a global target that DenseCL and SlotCon address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from densessl.data.synthetic import SynthConfig, SyntheticScenes, resolve_config
from densessl.views.sampler import ViewSampler
from densessl.views.spec import CropSpec

__all__ = ["scene_statistics"]

_IGNORE = 255


def _instances(instance_mask: np.ndarray) -> list[int]:
    ids = np.unique(instance_mask)
    return [int(i) for i in ids if i not in (0, _IGNORE)]


def _largest(instance_mask: np.ndarray, top: int, left: int, height: int, width: int) -> int | None:
    window = instance_mask[top : top + height, left : left + width]
    ids, counts = np.unique(window[(window != 0) & (window != _IGNORE)], return_counts=True)
    return int(ids[counts.argmax()]) if len(ids) else None


def scene_statistics(
    config: SynthConfig | str | None,
    crops: Sequence[CropSpec],
    images: int = 500,
    stride: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """The statistics of the module docstring over the first ``images`` pre-training scenes,
    with one draw of ``crops`` (a recipe's views) per scene."""
    config = resolve_config(config)
    scenes = SyntheticScenes(config, "train", images)
    sampler = ViewSampler(list(crops))
    generator = torch.Generator().manual_seed(seed)
    cell = stride * stride
    objects, areas = [], []
    touched = cut = 0
    pairs = different = 0
    for i in range(images):
        _, _, instance_mask = scenes.render(i)
        ids = _instances(instance_mask)
        objects.append(len(ids))
        areas += [float((instance_mask == k).sum()) / cell for k in ids]
        records = sampler.sample_records(*instance_mask.shape, generator)
        for record in records:
            box = record.box
            inside = np.zeros(instance_mask.shape, dtype=bool)
            inside[box.top : box.top + box.height, box.left : box.left + box.width] = True
            for k in ids:
                mask = instance_mask == k
                within = int((mask & inside).sum())
                if within:
                    touched += 1
                    cut += within < int(mask.sum())
        if len(records) >= 2:
            a, b = records[0].box, records[1].box
            main_a = _largest(instance_mask, a.top, a.left, a.height, a.width)
            main_b = _largest(instance_mask, b.top, b.left, b.height, b.width)
            if main_a is not None and main_b is not None:
                pairs += 1
                different += main_a != main_b
    area = np.asarray(areas)
    return {
        "images": images,
        "image_size": config.image_size,
        "feature_cells": config.image_size // stride,
        "objects_per_image": {
            "mean": float(np.mean(objects)),
            "min": int(min(objects)),
            "max": int(max(objects)),
        },
        "cells_per_object": {
            "median": float(np.median(area)),
            "share_at_least_2": float((area >= 2).mean()),
            "share_at_least_4": float((area >= 4).mean()),
        },
        "cut_by_crop": cut / max(touched, 1),
        "different_main_object": different / max(pairs, 1),
    }

"""Batched photometric augmentation of the views, on any device, with per-sample draws.

- :mod:`~densessl.augment.spec`: what a recipe declares (colour steps, AutoAugment, per-sample
  choices, sequences) as plain dataclasses, without torch;
- :mod:`~densessl.augment.colour`: colour jitter, grayscale, blur, solarize on floats in [0, 1]
  (the MoCo-v2 / SlotCon chain :func:`apply_photometric`) and :func:`normalize`;
- :mod:`~densessl.augment.autoaugment`: AutoAugment (ImageNet policy) on uint8 images;
- :mod:`~densessl.augment.pipeline`: :func:`augment_view`, the trainer's entry point, which runs
  a declared pipeline and normalises.

Every random parameter is drawn from an explicit CPU ``torch.Generator`` and then moved to the
images' device, so a seed gives the same augmentation on CPU and GPU.

Importing this package loads no torch (a recipe needs only :mod:`~densessl.augment.spec`): the
names of the other modules are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from densessl.augment.spec import (
    MOCO_V2,
    SLOTCON_VIEW1,
    SLOTCON_VIEW2,
    AutoAugmentConfig,
    PhotometricChoice,
    PhotometricConfig,
    PhotometricPipeline,
    PhotometricStep,
    check_pipeline,
    ends_uint8,
)

if TYPE_CHECKING:
    from densessl.augment.autoaugment import (
        AUTOAUGMENT_OPS,
        IMAGENET_POLICY,
        apply_autoaugment,
        apply_autoaugment_op,
        apply_ops_per_sample,
        autoaugment_actions,
        sample_autoaugment_params,
    )
    from densessl.augment.colour import (
        BRIGHTNESS,
        CONTRAST,
        HUE,
        IMAGENET_MEAN,
        IMAGENET_STD,
        SATURATION,
        adjust_brightness,
        adjust_contrast,
        adjust_hue,
        adjust_saturation,
        apply_photometric,
        blur_radius,
        color_jitter,
        gaussian_blur,
        grayscale,
        normalize,
        rgb_to_gray,
        sample_photometric_params,
        solarize,
    )
    from densessl.augment.pipeline import augment_view, run_pipeline

__all__ = [
    "AUTOAUGMENT_OPS",
    "BRIGHTNESS",
    "CONTRAST",
    "HUE",
    "IMAGENET_MEAN",
    "IMAGENET_POLICY",
    "IMAGENET_STD",
    "MOCO_V2",
    "SATURATION",
    "SLOTCON_VIEW1",
    "SLOTCON_VIEW2",
    "AutoAugmentConfig",
    "PhotometricChoice",
    "PhotometricConfig",
    "PhotometricPipeline",
    "PhotometricStep",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_autoaugment",
    "apply_autoaugment_op",
    "apply_ops_per_sample",
    "apply_photometric",
    "augment_view",
    "autoaugment_actions",
    "blur_radius",
    "check_pipeline",
    "color_jitter",
    "ends_uint8",
    "gaussian_blur",
    "grayscale",
    "normalize",
    "rgb_to_gray",
    "run_pipeline",
    "sample_autoaugment_params",
    "sample_photometric_params",
    "solarize",
]

#: the module that serves each name of the torch modules on first access
_LAZY = {
    **dict.fromkeys(
        ("AUTOAUGMENT_OPS", "IMAGENET_POLICY", "apply_autoaugment", "apply_autoaugment_op")
        + ("apply_ops_per_sample", "autoaugment_actions", "sample_autoaugment_params"),
        "autoaugment",
    ),
    **dict.fromkeys(
        ("BRIGHTNESS", "CONTRAST", "HUE", "SATURATION", "IMAGENET_MEAN", "IMAGENET_STD")
        + ("adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation")
        + ("apply_photometric", "blur_radius", "color_jitter", "gaussian_blur", "grayscale")
        + ("normalize", "rgb_to_gray", "sample_photometric_params", "solarize"),
        "colour",
    ),
    **dict.fromkeys(("augment_view", "run_pipeline"), "pipeline"),
}


def __getattr__(name: str) -> Any:
    # only the listed names: any other must raise AttributeError, so that
    # ``from densessl.augment import colour`` falls back to importing the submodule
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

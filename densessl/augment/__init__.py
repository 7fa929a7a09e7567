"""Batched photometric augmentation of the views, on any device, with per-sample draws.

- :mod:`~densessl.augment.colour`: colour jitter, grayscale, blur, solarize on floats in [0, 1]
  (the MoCo-v2 / SlotCon chain :func:`apply_photometric`) and :func:`normalize`;
- :mod:`~densessl.augment.autoaugment`: AutoAugment (ImageNet policy) on uint8 images;
- :mod:`~densessl.augment.pipeline`: a view's declared pipeline (sequences, per-sample random
  choices between sub-pipelines) and :func:`augment_view`, the trainer's entry point.

Every random parameter is drawn from an explicit CPU ``torch.Generator`` and then moved to the
images' device, so a seed gives the same augmentation on CPU and GPU.
"""

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
    MOCO_V2,
    SATURATION,
    SLOTCON_VIEW1,
    SLOTCON_VIEW2,
    PhotometricConfig,
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
from densessl.augment.pipeline import (
    AutoAugmentConfig,
    PhotometricChoice,
    PhotometricPipeline,
    PhotometricStep,
    augment_view,
    check_pipeline,
    run_pipeline,
)

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
    "apply_autoaugment_op",
    "apply_ops_per_sample",
    "apply_photometric",
    "augment_view",
    "apply_autoaugment",
    "autoaugment_actions",
    "blur_radius",
    "check_pipeline",
    "color_jitter",
    "gaussian_blur",
    "grayscale",
    "normalize",
    "rgb_to_gray",
    "run_pipeline",
    "sample_autoaugment_params",
    "sample_photometric_params",
    "solarize",
]

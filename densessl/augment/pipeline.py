"""Running a view's declared photometric pipeline (:mod:`densessl.augment.spec`) on a batch.

:func:`augment_view` takes uint8 crops ``(B, 3, H, W)`` on any device and returns ImageNet-normalised
floats: uint8 steps (AutoAugment) run on uint8, then a colour step turns the images into floats in
``[0, 1]`` (``x / 255``) for the float ops.

Randomness, all from the explicit CPU generator, in a fixed order: a choice draws one uniform per
sample, then runs its branches in declared order, each on the sub-batch of samples that picked
it (an empty sub-batch draws nothing); a sequence runs its steps in order.
"""

from __future__ import annotations

import torch

from densessl.augment.autoaugment import apply_autoaugment
from densessl.augment.colour import apply_photometric, normalize
from densessl.augment.spec import (
    AutoAugmentConfig,
    PhotometricChoice,
    PhotometricConfig,
    PhotometricPipeline,
    ends_uint8,
)

__all__ = ["augment_view", "run_pipeline"]


def _to_float(images: torch.Tensor) -> torch.Tensor:
    # the same conversion the trainer made before pipelines existed: golden losses depend on it
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def _run_choice(images: torch.Tensor, choice: PhotometricChoice, generator: torch.Generator) -> torch.Tensor:
    batch = images.shape[0]
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    bounds = torch.tensor(choice.weights(), dtype=torch.float64).cumsum(0)
    # u in [0, 1): pipeline i takes [bounds[i-1], bounds[i]); the clamp absorbs a last bound
    # rounded below 1
    pick = torch.searchsorted(bounds, u, right=True).clamp_(max=len(choice.choice) - 1)
    uint8_out = ends_uint8(choice, images.dtype == torch.uint8)
    out: torch.Tensor | None = None
    for i, branch in enumerate(choice.choice):
        members = (pick == i).nonzero().squeeze(1)
        if members.numel() == 0:
            continue
        idx = members.to(images.device, non_blocking=True)
        sub = images if members.numel() == batch else images.index_select(0, idx)
        result = run_pipeline(sub, branch, generator)
        if not uint8_out:
            result = _to_float(result)
        if members.numel() == batch:
            return result if result is not images else images.clone()
        if out is None:
            out = torch.empty((batch, *result.shape[1:]), dtype=result.dtype, device=result.device)
        out.index_copy_(0, idx, result)
    if out is None:  # an empty batch
        return images.clone() if uint8_out else _to_float(images.clone())
    return out


def run_pipeline(
    images: torch.Tensor, pipeline: PhotometricPipeline, generator: torch.Generator
) -> torch.Tensor:
    """Run ``pipeline`` on a batch ``(B, 3, H, W)`` (uint8, or floats in [0, 1]) on any device.

    Returns uint8 when every step the images went through kept uint8, else floats in ``[0, 1]``;
    not normalised. The input is not modified.
    """
    if isinstance(pipeline, list | tuple):
        out = images
        for step in pipeline:
            out = run_pipeline(out, step, generator)
        return out if out is not images else images.clone()
    if isinstance(pipeline, PhotometricConfig):
        return apply_photometric(_to_float(images), pipeline, generator)
    if isinstance(pipeline, AutoAugmentConfig):
        if images.dtype != torch.uint8:
            raise ValueError("AutoAugment works on uint8 images; it must come before any colour step")
        return apply_autoaugment(images, generator, pipeline.autoaugment)
    if isinstance(pipeline, PhotometricChoice):
        return _run_choice(images, pipeline, generator)
    raise TypeError(f"not a photometric pipeline step: {pipeline!r}")


def augment_view(
    crops: torch.Tensor, pipeline: PhotometricPipeline, generator: torch.Generator
) -> torch.Tensor:
    """One view's photometric augmentation: uint8 crops ``(B, 3, H, W)`` on any device ->
    ImageNet-normalised floats. Every draw comes from the CPU ``generator``.

    For a single colour step this is exactly
    ``normalize(apply_photometric(crops.float().div_(255.0), config, generator))``.
    """
    if crops.dtype != torch.uint8:
        raise ValueError(f"augment_view needs uint8 crops, got {crops.dtype}")
    return normalize(_to_float(run_pipeline(crops, pipeline, generator)))

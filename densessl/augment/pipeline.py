"""Declared photometric pipelines per view: sequences of steps with per-sample random choices.

A view's ``photometric`` entry is a *pipeline*, one of:

- a colour step, :class:`~densessl.augment.colour.PhotometricConfig` (jitter -> grayscale ->
  blur -> solarize on floats), written with its fields as before::

      photometric: {jitter_p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1,
                    grayscale_p: 0.2, blur_p: 0.5}

- AutoAugment on uint8 images, :class:`AutoAugmentConfig`: ``photometric: {autoaugment: imagenet}``;
- a per-sample random choice between sub-pipelines, :class:`PhotometricChoice` (weights ``p``,
  normalised like torchvision's ``RandomChoice``; uniform when omitted)::

      photometric:
        choice:
          - {autoaugment: imagenet}
          - {jitter_p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1,
             grayscale_p: 0.2, blur_p: 0.5}
        p: [0.5, 0.5]

- a sequence of the above, applied in order: ``photometric: [{autoaugment: imagenet}, {...}]``.

Images enter as uint8 crops and stay uint8 through the uint8 steps (AutoAugment); a colour step
turns them into floats in ``[0, 1]`` (``x / 255``), so a uint8 step may not follow a colour step
(:func:`check_pipeline` refuses such a pipeline at start-up). A choice whose branches end in
different types gives floats. :func:`augment_view` runs a pipeline and normalises the result.

Randomness, all from the explicit CPU generator, in a fixed order: a choice draws one uniform per
sample, then runs its branches in declared order, each on the sub-batch of samples that picked
it (an empty sub-batch draws nothing); a sequence runs its steps in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from densessl.augment.autoaugment import apply_autoaugment
from densessl.augment.colour import PhotometricConfig, apply_photometric, normalize

__all__ = [
    "AutoAugmentConfig",
    "PhotometricChoice",
    "PhotometricPipeline",
    "PhotometricStep",
    "augment_view",
    "check_pipeline",
    "run_pipeline",
]


@dataclass(frozen=True)
class AutoAugmentConfig:
    """AutoAugment with one draw per sample (``{autoaugment: imagenet}``), on uint8 images.

    torchvision's magnitudes, nearest interpolation, fill 0 (:mod:`densessl.augment.autoaugment`).
    """

    autoaugment: Literal["imagenet"] = "imagenet"


@dataclass(frozen=True)
class PhotometricChoice:
    """Each sample runs one of ``choice``'s pipelines, picked with weights ``p`` (uniform if None)."""

    choice: tuple[PhotometricPipeline, ...]
    p: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.choice:
            raise ValueError("choice needs at least one pipeline")
        if self.p is not None:
            if len(self.p) != len(self.choice):
                n = len(self.choice)
                raise ValueError(f"p must have one weight per pipeline ({n}), got {list(self.p)}")
            if any(w < 0 for w in self.p) or sum(self.p) <= 0:
                raise ValueError(f"p must be weights >= 0 with a positive sum, got {list(self.p)}")

    def weights(self) -> tuple[float, ...]:
        """The normalised probabilities of the pipelines."""
        p = self.p if self.p is not None else (1.0,) * len(self.choice)
        total = float(sum(p))
        return tuple(w / total for w in p)


PhotometricStep = PhotometricConfig | AutoAugmentConfig | PhotometricChoice
PhotometricPipeline = PhotometricStep | tuple[PhotometricStep, ...]


def _flow(pipeline: object, uint8_in: bool, key: str, colour: list[tuple[str, PhotometricConfig]]) -> bool:
    """Whether ``pipeline`` returns uint8 for an input that is uint8 (``uint8_in``) or float;
    collects its colour steps with their config keys; ValueError when a uint8 step gets floats."""
    if isinstance(pipeline, list | tuple):
        for i, step in enumerate(pipeline):
            uint8_in = _flow(step, uint8_in, f"{key}.{i}", colour)
        return uint8_in
    if isinstance(pipeline, PhotometricConfig):
        colour.append((key, pipeline))
        return False
    if isinstance(pipeline, AutoAugmentConfig):
        if not uint8_in:
            raise ValueError(
                f"{key}: AutoAugment works on uint8 images; it must come before any colour step "
                "(a colour step turns the images into floats)"
            )
        return True
    if isinstance(pipeline, PhotometricChoice):
        ends = [_flow(p, uint8_in, f"{key}.choice.{i}", colour) for i, p in enumerate(pipeline.choice)]
        return all(ends)
    raise TypeError(f"{key}: not a photometric pipeline step: {pipeline!r}")


def check_pipeline(
    pipeline: PhotometricPipeline, key: str = "photometric"
) -> list[tuple[str, PhotometricConfig]]:
    """Check the order of ``pipeline``'s steps for uint8 crops (ValueError naming ``key``'s step
    otherwise) and return its colour steps with their config keys, for range checks."""
    colour: list[tuple[str, PhotometricConfig]] = []
    _flow(pipeline, True, key, colour)
    return colour


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
    uint8_out = _flow(choice, images.dtype == torch.uint8, "choice", [])
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

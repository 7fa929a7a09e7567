"""What a recipe declares about a view's photometric pipeline, as plain dataclasses (no torch).

The configuration layer reads ``views.N.photometric`` into these classes without loading the
batched ops (:mod:`densessl.augment.colour`, :mod:`densessl.augment.autoaugment`), which import
torch; :mod:`densessl.augment.pipeline` runs them. A pipeline is one of:

- a colour step, :class:`PhotometricConfig` (jitter -> grayscale -> blur -> solarize on floats),
  written with its fields::

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

Crops enter as uint8 and stay uint8 through the uint8 steps (AutoAugment); a colour step turns
them into floats in ``[0, 1]``, so a uint8 step may not follow a colour step
(:func:`check_pipeline` refuses such a pipeline at start-up). A choice whose branches end in
different types gives floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MOCO_V2",
    "SLOTCON_VIEW1",
    "SLOTCON_VIEW2",
    "AutoAugmentConfig",
    "PhotometricChoice",
    "PhotometricConfig",
    "PhotometricPipeline",
    "PhotometricStep",
    "check_pipeline",
    "ends_uint8",
]


@dataclass(frozen=True)
class PhotometricConfig:
    """Probabilities and ranges of the photometric augmentations (defaults: MoCo-v2 "aug+").

    Attributes:
        jitter_p: probability of applying colour jitter.
        brightness, contrast, saturation: jitter strength ``v``; the factor is uniform in
            ``[max(0, 1 - v), 1 + v]``; 0 disables the op (as in ``ColorJitter``).
        hue: hue shift uniform in ``[-hue, hue]`` (at most 0.5); 0 disables it.
        grayscale_p: probability of converting to 3-channel grayscale.
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur standard deviation in pixels, sampled uniformly.
            MoCo's PIL ``GaussianBlur(radius=sigma)`` is a Gaussian of std ``sigma`` and was
            tuned for 224 px crops.
        blur_sigma_scale: multiplies the sampled sigma; set it to ``image_size / 224`` to keep
            the blur's relative strength on smaller crops (e.g. 96 / 224). Default 1.0.
        solarize_p: probability of solarizing.
        solarize_threshold: pixels ``>= threshold`` are inverted. 0.5 on ``[0, 1]`` floats is the
            same as PIL's threshold 128 on images that came from uint8 (128/255 > 0.5 > 127/255).
    """

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_sigma_scale: float = 1.0
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5


MOCO_V2 = PhotometricConfig()
"""MoCo-v2 aug+ (also DenseCL and the revisited-MoCo key crop): symmetric."""
SLOTCON_VIEW1 = PhotometricConfig(saturation=0.2, blur_p=1.0)
"""SlotCon / MGC view 1: saturation 0.2, blur always, no solarize."""
SLOTCON_VIEW2 = PhotometricConfig(saturation=0.2, blur_p=0.1, solarize_p=0.2)
"""SlotCon / MGC view 2: saturation 0.2, blur 0.1, solarize 0.2."""


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


def ends_uint8(pipeline: PhotometricPipeline, uint8_in: bool) -> bool:
    """Whether ``pipeline`` gives uint8 images for uint8 (``uint8_in``) or float input."""
    return _flow(pipeline, uint8_in, "photometric", [])

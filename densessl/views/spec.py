"""What a recipe says about one view's crop, as a plain dataclass (no torch).

The configuration layer reads ``views.N.crop`` into a :class:`CropSpec` without loading the
sampler (:mod:`densessl.views.sampler`, which draws the crops with torch); the sampler imports it
from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CropSpec"]


@dataclass(frozen=True)
class CropSpec:
    """How to draw one view.

    Attributes:
        size: output side in pixels (square views).
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        interpolation: ``"bilinear"`` or ``"bicubic"`` resize (antialiased).
        flip_p: probability of a horizontal flip (recorded in the view record).
        reference: index of an earlier view this crop must overlap, or ``None``.
        rule: overlap rule against the reference: ``"intersection"`` (``|crop & ref| >=
            threshold * sampled area``) or ``"iou"`` (``IoU > threshold``).
        threshold: the rule's threshold.
        tries: sampling attempts before the fallback; ``None`` retries until accepted (capped,
            see :func:`densessl.views.geometry.sample_constrained_crop`).
    """

    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    flip_p: float = 0.5
    reference: int | None = None
    rule: Literal["intersection", "iou"] = "intersection"
    threshold: float = 0.0
    tries: int | None = 10

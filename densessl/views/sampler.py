"""Multi-view crop sampler: a list of crop specifications -> uint8 crops plus their geometry.

Each method describes its views as a list of :class:`CropSpec`, drawn in order so that a spec
can be conditioned on any earlier view:

* MoCo-v2 / DenseCL: two independent 224 px crops, scale (0.2, 1), bilinear;
* SlotCon: view 0 scale (0.08, 1) bicubic; view 1 the same, ``reference=0``,
  ``rule="intersection"``, ``threshold=0.01``;
* MGC: view 0 scale (0.2, 1) bilinear; view 1 ``reference=0``, ``rule="iou"``,
  ``threshold=0.2``, ``tries=None`` (retry until accepted, capped);
* revisited MoCo: two 160 px crops (query, key), then four 96 px crops with scale
  (0.05, 0.14), ``reference=1`` (the key), ``rule="intersection"``, ``threshold=0.1``.

The photometric part of the augmentation is batched separately (:mod:`densessl.augment`).

Boxes are always drawn in the pixels of the upright original image. A JPEG may then be decoded
at 1/2, 1/4 or 1/8 of its size when every view shrinks its box at least that much
(:meth:`ViewSampler.reduction`); :meth:`ViewSampler.crop` maps the boxes onto the reduced image,
so the records, and everything computed from them, do not change.
"""

from __future__ import annotations

import torch

from densessl.views.geometry import (
    Box,
    ViewRecord,
    crop_view,
    sample_constrained_crop,
    sample_crop,
)
from densessl.views.spec import CropSpec

__all__ = ["CropSpec", "ViewSampler", "records_to_tensors"]


class ViewSampler:
    """Draws the views of one image according to a list of :class:`CropSpec`.

    Calling it with a uint8 ``(3, H, W)`` image and a ``torch.Generator`` returns the list of
    uint8 ``(3, size, size)`` crops and the matching list of :class:`ViewRecord`. For every view
    the draws are: crop box, then one uniform for the flip, so the result is a function of the
    generator state alone.
    """

    def __init__(self, specs: list[CropSpec]) -> None:
        for k, spec in enumerate(specs):
            if spec.reference is not None and not 0 <= spec.reference < k:
                raise ValueError(f"view {k} references view {spec.reference}, which is not earlier")
            if spec.rule not in ("intersection", "iou"):
                raise ValueError(f"view {k}: unknown rule {spec.rule!r}")
            if spec.tries is None and spec.reference is None:
                raise ValueError(f"view {k}: tries=None only makes sense for a constrained crop")
        self.specs = list(specs)

    def __len__(self) -> int:
        return len(self.specs)

    def sample_records(self, height: int, width: int, generator: torch.Generator) -> list[ViewRecord]:
        """Draw the geometry of all views of an ``height x width`` image without cropping."""
        records: list[ViewRecord] = []
        for spec in self.specs:
            if spec.reference is None:
                assert spec.tries is not None
                box = sample_crop(height, width, spec.scale, spec.ratio, generator, tries=spec.tries)
                accepted = True
            else:
                box, accepted = sample_constrained_crop(
                    height,
                    width,
                    spec.scale,
                    spec.ratio,
                    records[spec.reference].box,
                    spec.rule,
                    spec.threshold,
                    generator,
                    tries=spec.tries,
                )
            flipped = bool(torch.rand(1, generator=generator).item() < spec.flip_p)
            records.append(
                ViewRecord(
                    box=box,
                    flipped=flipped,
                    size=(spec.size, spec.size),
                    reference=spec.reference,
                    accepted=accepted,
                )
            )
        return records

    def reduction(self, records: list[ViewRecord], max_reduction: int = 8) -> int:
        """The largest factor in (1, 2, 4, 8), at most ``max_reduction``, by which every view's box
        is at least that many times its output size on both axes.

        Decoding at that reduction leaves each crop at least as many pixels as its output, so the
        antialiased resize still only shrinks and the views differ from full-size decoding by
        interpolation alone.
        """
        best = 1
        for factor in (2, 4, 8):
            if factor > max_reduction:
                break
            if all(r.box.width >= factor * r.size[1] and r.box.height >= factor * r.size[0] for r in records):
                best = factor
        return best

    def crop(
        self, image: torch.Tensor, records: list[ViewRecord], original_size: tuple[int, int]
    ) -> list[torch.Tensor]:
        """Crop the views of ``records`` from ``image``: the ``original_size`` ``(height, width)``
        image the boxes were drawn in, or that image decoded at a reduced size.

        On a reduced image each box is scaled per axis by the actual size ratio (a decoder may
        round sizes up) and its edges rounded to the nearest pixel: at most half a pixel of the
        reduced image, which :meth:`reduction` keeps below half a pixel of the output view.
        """
        height, width = original_size
        image_height, image_width = int(image.shape[-2]), int(image.shape[-1])
        crops = []
        for spec, rec in zip(self.specs, records, strict=True):
            box = rec.box
            if (image_height, image_width) != (height, width):
                box = _scale_box(box, image_height / height, image_width / width, image_height, image_width)
            crops.append(crop_view(image, box, spec.size, spec.interpolation, rec.flipped))
        return crops

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator
    ) -> tuple[list[torch.Tensor], list[ViewRecord]]:
        """Crop all views of a uint8 ``(3, H, W)`` image; returns ``(crops, records)``."""
        if image.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
        height, width = int(image.shape[-2]), int(image.shape[-1])
        records = self.sample_records(height, width, generator)
        return self.crop(image, records, (height, width)), records


def _scale_box(box: Box, scale_y: float, scale_x: float, height: int, width: int) -> Box:
    left = min(round(box.left * scale_x), width - 1)
    top = min(round(box.top * scale_y), height - 1)
    right = min(max(round(box.right * scale_x), left + 1), width)
    bottom = min(max(round(box.bottom * scale_y), top + 1), height)
    return Box(left, top, right - left, bottom - top)


def records_to_tensors(records: list[ViewRecord]) -> dict[str, torch.Tensor]:
    """Pack one sample's view records for collation.

    Returns ``boxes`` int64 ``(V, 4)`` of ``(left, top, width, height)``, ``flips`` bool ``(V,)``
    and ``accepted`` bool ``(V,)``. Stacking these over a batch gives the ``(B, V, ...)`` inputs
    of :func:`densessl.views.geometry.overlap_boxes_batch`.
    """
    boxes = torch.tensor(
        [[r.box.left, r.box.top, r.box.width, r.box.height] for r in records], dtype=torch.long
    ).reshape(len(records), 4)
    flips = torch.tensor([r.flipped for r in records], dtype=torch.bool)
    accepted = torch.tensor([r.accepted for r in records], dtype=torch.bool)
    return {"boxes": boxes, "flips": flips, "accepted": accepted}

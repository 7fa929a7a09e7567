"""View geometry: crop sampling, view records, SlotCon overlap boxes and MGC correspondences.

Everything here is a pure function of integer boxes in source-image pixels, so it can run in a
data-loader worker, in the collate step or (for the batched variants) on the GPU, and it can be
unit-tested against hand-made boxes.

Conventions
-----------
* A :class:`Box` is ``(left, top, width, height)`` in source pixels (half-open: it covers the
  columns ``left .. left + width - 1``). torchvision's ``get_params`` returns ``(top, left,
  height, width)`` and MGC's reference stores ``(left, top, height, width)``; both are converted
  at the boundary, never stored.
* A view shown to the network is the crop resized to ``size`` and then, if ``flipped``, mirrored
  horizontally. Normalised view coordinates ``(u, v)`` in ``[0, 1]`` refer to the *displayed*
  (possibly mirrored) view.
* Randomness always comes from an explicit ``torch.Generator`` so that a sample's views are a
  function of (seed, sample), independent of worker scheduling and of the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "MGC_GRANULARITIES",
    "Box",
    "MGCGranularity",
    "ViewRecord",
    "crop_view",
    "mgc_correspondences",
    "overlap_boxes",
    "overlap_boxes_batch",
    "sample_constrained_crop",
    "sample_crop",
]

# MGC's reference loops "until accepted"; we bound it so a pathological image cannot hang a worker.
UNBOUNDED_TRIES_CAP = 1000


@dataclass(frozen=True)
class Box:
    """Axis-aligned crop box in source-image pixels: ``(left, top, width, height)``."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        """Exclusive right edge (``left + width``)."""
        return self.left + self.width

    @property
    def bottom(self) -> int:
        """Exclusive bottom edge (``top + height``)."""
        return self.top + self.height

    @property
    def area(self) -> int:
        """Number of source pixels covered."""
        return self.width * self.height

    def overlap(self, other: Box) -> Box | None:
        """The intersection box, or ``None`` when the boxes share no pixel."""
        left = max(self.left, other.left)
        top = max(self.top, other.top)
        right = min(self.right, other.right)
        bottom = min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return None
        return Box(left, top, right - left, bottom - top)

    def intersection(self, other: Box) -> int:
        """Area (pixels) of the intersection with ``other``; 0 when disjoint."""
        ov = self.overlap(other)
        return 0 if ov is None else ov.area

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other``."""
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class ViewRecord:
    """Geometry of one produced view.

    Attributes:
        box: crop in source pixels.
        flipped: whether the resized crop was mirrored horizontally.
        size: output ``(height, width)`` of the view.
        reference: index of the view this crop was conditioned on, or ``None``.
        accepted: ``False`` when a constrained crop fell back to an unconstrained draw.
    """

    box: Box
    flipped: bool
    size: tuple[int, int]
    reference: int | None = None
    accepted: bool = True


# --------------------------------------------------------------------------------------------
# Crop sampling
# --------------------------------------------------------------------------------------------


def _draw_crop(
    height: int,
    width: int,
    scale: Sequence[float],
    log_ratio: torch.Tensor,
    generator: torch.Generator,
) -> tuple[Box | None, float]:
    """One try of the RandomResizedCrop law: ``(box or None if the size is invalid, target area)``.

    The draw sequence (uniform area, uniform log-ratio, then randint top, randint left, all on
    1-element float32 / int64 tensors) is the one torchvision uses, so a generator in the same
    state as torchvision's global RNG yields the same box.
    """
    area = height * width
    target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
    # exp of a float32 tensor (not math.exp) to keep torchvision's rounding.
    aspect = torch.exp(
        torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator)
    ).item()
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
        top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
        left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
        return Box(left, top, w, h), target_area
    return None, target_area


def _center_fallback(height: int, width: int, ratio: Sequence[float]) -> Box:
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return Box((width - w) // 2, (height - h) // 2, w, h)


def sample_crop(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
    tries: int = 10,
) -> Box:
    """Sample a crop with torchvision's ``RandomResizedCrop.get_params`` law.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``, uniform position,
    ``tries`` attempts; if none fits, a centre crop of the whole image clamped to the ratio bounds.
    Draws come from ``generator`` in the same order and dtypes as torchvision, so with equal
    generator state the boxes are identical.
    """
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(tries):
        box, _ = _draw_crop(height, width, scale, log_ratio, generator)
        if box is not None:
            return box
    return _center_fallback(height, width, ratio)


def _accepts(box: Box, target_area: float, reference: Box, rule: str, threshold: float) -> bool:
    if rule == "intersection":
        # Reference semantics: compared to the *sampled* (float) target area, not w*h.
        return box.intersection(reference) >= threshold * target_area
    if rule == "iou":
        return box.iou(reference) > threshold
    raise ValueError(f"unknown overlap rule {rule!r}; expected 'intersection' or 'iou'")


def sample_constrained_crop(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    reference: Box,
    rule: Literal["intersection", "iou"],
    threshold: float,
    generator: torch.Generator,
    tries: int | None = 10,
    fallback: Literal["random", "full"] | None = None,
) -> tuple[Box, bool]:
    """Sample a crop that overlaps ``reference``; returns ``(box, accepted)``.

    Each try draws a box with the :func:`sample_crop` law (skipping the try when the size does
    not fit the image) and accepts it when

    * ``rule="intersection"``: ``|box & reference| >= threshold * target_area``, where
      ``target_area`` is the sampled (float) area before rounding to integer sides (SlotCon:
      0.01, revisited MoCo: 0.10);
    * ``rule="iou"``: ``IoU(box, reference) > threshold`` (MGC: 0.2).

    ``tries=None`` means "retry until accepted" (MGC); it is capped at ``UNBOUNDED_TRIES_CAP``
    (1000) attempts so a pathological image cannot loop forever.

    When no try is accepted the result has ``accepted=False`` and comes from ``fallback``:
    ``"random"`` = an unconstrained :func:`sample_crop` draw (the SlotCon / revisited MoCo
    behaviour; it may not overlap ``reference`` at all), ``"full"`` = the whole image (MGC's own
    escape hatch, which always overlaps). ``None`` picks ``"random"`` for a finite ``tries`` and
    ``"full"`` for ``tries=None``.
    """
    if rule not in ("intersection", "iou"):
        raise ValueError(f"unknown overlap rule {rule!r}; expected 'intersection' or 'iou'")
    n_tries = UNBOUNDED_TRIES_CAP if tries is None else tries
    if fallback is None:
        fallback = "full" if tries is None else "random"
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(n_tries):
        box, target_area = _draw_crop(height, width, scale, log_ratio, generator)
        if box is not None and _accepts(box, target_area, reference, rule, threshold):
            return box, True
    if fallback == "full":
        return Box(0, 0, width, height), False
    if fallback == "random":
        return sample_crop(height, width, scale, ratio, generator), False
    raise ValueError(f"unknown fallback {fallback!r}; expected 'random' or 'full'")


# --------------------------------------------------------------------------------------------
# Cropping
# --------------------------------------------------------------------------------------------

_INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def crop_view(
    image: torch.Tensor,
    box: Box,
    size: int | tuple[int, int],
    interpolation: Literal["bilinear", "bicubic"] = "bilinear",
    flip: bool = False,
) -> torch.Tensor:
    """Crop ``box`` from a uint8 ``(3, H, W)`` image, resize (antialiased) to ``size``, maybe mirror.

    Bicubic output is clamped to the uint8 range by torchvision.
    """
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
    out_size = [size, size] if isinstance(size, int) else list(size)
    out = TF.resized_crop(
        image,
        top=box.top,
        left=box.left,
        height=box.height,
        width=box.width,
        size=out_size,
        interpolation=_INTERPOLATIONS[interpolation],
        antialias=True,
    )
    if flip:
        out = TF.horizontal_flip(out)
    return out


# --------------------------------------------------------------------------------------------
# SlotCon overlap boxes
# --------------------------------------------------------------------------------------------


def overlap_boxes(
    a: ViewRecord, b: ViewRecord
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]] | None:
    """SlotCon's normalised overlap boxes of two views, or ``None`` when the crops are disjoint.

    The intersection of the two crops (source pixels) is expressed in each crop's own ``[0, 1]``
    coordinates as ``(x1, y1, x2, y2)``; for a flipped view x becomes ``(1 - x2, 1 - x1)`` so the
    box refers to the displayed view. After RoIAlign on a flipped view the sampled grid must be
    mirrored back (SlotCon flips the aligned map) to be in source orientation.

    The reference passes inverted boxes (``x2 < x1``) for disjoint crops without a guard; this
    function returns ``None`` instead so that callers decide (skip, mask, or reproduce via
    :func:`overlap_boxes_batch`, which keeps the raw values and a ``valid`` flag).
    """
    if a.box.overlap(b.box) is None:
        return None
    return _normalised_overlap(a.box, b.box, a.flipped), _normalised_overlap(b.box, a.box, b.flipped)


def _normalised_overlap(own: Box, other: Box, flipped: bool) -> tuple[float, float, float, float]:
    x1 = max(own.left, other.left)
    y1 = max(own.top, other.top)
    x2 = min(own.right, other.right)
    y2 = min(own.bottom, other.bottom)
    nx1 = (x1 - own.left) / own.width
    ny1 = (y1 - own.top) / own.height
    nx2 = (x2 - own.left) / own.width
    ny2 = (y2 - own.top) / own.height
    if flipped:
        nx1, nx2 = 1.0 - nx2, 1.0 - nx1
    return (nx1, ny1, nx2, ny2)


def overlap_boxes_batch(
    boxes_a: torch.Tensor,
    flips_a: torch.Tensor,
    boxes_b: torch.Tensor,
    flips_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched :func:`overlap_boxes` on ``(B, 4)`` tensors of ``(left, top, width, height)``.

    Returns ``(coords_a, coords_b, valid)``: two float32 ``(B, 4)`` tensors of ``(x1, y1, x2,
    y2)`` in each view's normalised coordinates (flip applied) and a bool ``(B,)`` mask that is
    ``False`` where the crops do not intersect. Invalid rows hold the reference's unguarded
    (inverted) values. Runs on the device of the inputs; arithmetic is float64 for exactness.
    """
    a = boxes_a.to(torch.float64)
    b = boxes_b.to(torch.float64)
    a_x2, a_y2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    b_x2, b_y2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    x1 = torch.maximum(a[:, 0], b[:, 0])
    y1 = torch.maximum(a[:, 1], b[:, 1])
    x2 = torch.minimum(a_x2, b_x2)
    y2 = torch.minimum(a_y2, b_y2)
    valid = (x2 > x1) & (y2 > y1)

    def normalise(own: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        nx1 = (x1 - own[:, 0]) / own[:, 2]
        ny1 = (y1 - own[:, 1]) / own[:, 3]
        nx2 = (x2 - own[:, 0]) / own[:, 2]
        ny2 = (y2 - own[:, 1]) / own[:, 3]
        f = flips.to(device=own.device, dtype=torch.bool)
        fx1 = torch.where(f, 1.0 - nx2, nx1)
        fx2 = torch.where(f, 1.0 - nx1, nx2)
        return torch.stack((fx1, ny1, fx2, ny2), dim=1).to(torch.float32)

    return normalise(a, flips_a), normalise(b, flips_b), valid


# --------------------------------------------------------------------------------------------
# MGC correspondences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MGCGranularity:
    """One MGC granularity: cell size in the crop, pair cap, stride ratios and stride clamps.

    Field names match the keyword arguments of :func:`mgc_correspondences`, so
    ``mgc_correspondences(a, b, **dataclasses.asdict(g))`` works.
    """

    cell: int
    cap: int
    stride_ratios: tuple[int, int]
    row_clamp: tuple[int, int]
    col_clamp: tuple[int, int]


MGC_GRANULARITIES: dict[str, MGCGranularity] = {
    "patch": MGCGranularity(cell=16, cap=10, stride_ratios=(12, 8), row_clamp=(2, 8), col_clamp=(2, 6)),
    "region32": MGCGranularity(cell=32, cap=10, stride_ratios=(8, 4), row_clamp=(2, 4), col_clamp=(1, 3)),
    "region112": MGCGranularity(cell=112, cap=2, stride_ratios=(1, 1), row_clamp=(1, 1), col_clamp=(1, 1)),
}
"""The three MGC settings (ViT-S/16 at 224 px): 14x14 patches, 7x7 regions of 32 px, 2x2 of 112 px."""


def _cell_range(start: float, end: float, cell: int, crop_size: int) -> tuple[int, int]:
    """Inclusive range of cells touched by ``[start, end)`` in crop pixels (MGC rule).

    An end exactly on a cell boundary does not claim the next cell, and an end past the crop
    (float overshoot) is clipped to the last cell.
    """
    first = int(start // cell)
    last = int(end // cell)
    if end % cell == 0 or end > crop_size:
        last -= 1
    return first, last


def _rect_overlap(
    ax: float, ay: float, aw: float, ah: float, bx: float, by: float, bw: float, bh: float
) -> tuple[float, float, float, float] | None:
    """Intersection ``(x, y, w, h)`` of two float rectangles, or ``None`` when it is empty."""
    if ax + aw > bx and bx + bw > ax and ay + ah > by and by + bh > ay:
        x = max(ax, bx)
        y = max(ay, by)
        return x, y, min(ax + aw, bx + bw) - x, min(ay + ah, by + bh) - y
    return None


def mgc_correspondences(
    a: ViewRecord,
    b: ViewRecord,
    crop_size: int = 224,
    cell: int = 16,
    cap: int = 10,
    stride_ratios: tuple[int, int] = (12, 8),
    row_clamp: tuple[int, int] = (2, 8),
    col_clamp: tuple[int, int] = (2, 6),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MGC token pairs between view ``a`` (online / view 1) and view ``b`` (view 2).

    Implements the reference construction (spec 5.2), with ``L = crop_size // cell``:

    1. the overlap of the two crops, in view-a crop pixels, touches the cells
       ``floor(start / cell) .. floor(end / cell)`` (an end exactly on a cell edge, or past the
       crop, does not claim the next cell);
    2. those view-a cells are visited with a row stride ``clamp(int(IoU * stride_ratios[0]),
       *row_clamp)`` and a column stride ``clamp(int(IoU * stride_ratios[1]), *col_clamp)``,
       i.e. sparser when the views overlap more;
    3. the part of each visited cell inside the overlap is mapped through the source image into
       view-b crop pixels and paired with every view-b cell it touches; the token index is
       ``row * L + col``, with ``col`` mirrored to ``L - 1 - col`` for a flipped view;
    4. weight = ``|cell_a & cell_b| / (|cell_a| + |cell_b|)`` measured in source pixels (half the
       Dice overlap, in ``(0, 0.5]``), computed as in the reference via area fractions; only
       pairs with a positive weight are candidates;
    5. the ``cap`` largest weights are kept; fewer candidates are padded with index 0 / 0 /
       weight 0. Output order: descending weight, ties in visiting order (rows, then columns),
       padding last. (The reference's order differs; the loss averages over pairs, so only the
       kept set matters, and among exactly tied weights at the cut the kept set may differ.)

    Returns ``(idx_a, idx_b, weights)``: two int64 tensors and one float64 tensor of length
    ``cap``. Disjoint crops give all padding.
    """
    box_a, box_b = a.box, b.box
    s = float(crop_size)
    grid = crop_size // cell
    ov = box_a.overlap(box_b)
    pairs: list[tuple[float, int, int]] = []
    if ov is not None:
        inter = ov.area
        iou = inter / (box_a.area + box_b.area - inter)
        row_step = min(max(int(iou * stride_ratios[0]), row_clamp[0]), row_clamp[1])
        col_step = min(max(int(iou * stride_ratios[1]), col_clamp[0]), col_clamp[1])
        # Source area of one cell of each view (s_v = area(box_v) / L^2).
        cell_src_a = box_a.area / grid**2
        cell_src_b = box_b.area / grid**2
        # Overlap in view-a crop pixels.
        ox = (ov.left - box_a.left) / box_a.width * s
        oy = (ov.top - box_a.top) / box_a.height * s
        ow = ov.width / box_a.width * s
        oh = ov.height / box_a.height * s
        r0, r1 = _cell_range(oy, oy + oh, cell, crop_size)
        c0, c1 = _cell_range(ox, ox + ow, cell, crop_size)
        cell_area = float(cell * cell)
        for i in range(r0, r1 + 1, row_step):
            for j in range(c0, c1 + 1, col_step):
                piece = _rect_overlap(ox, oy, ow, oh, j * cell, i * cell, cell, cell)
                if piece is None:
                    continue
                px, py, pw, ph = piece
                alpha = pw * ph / cell_area
                idx_a = i * grid + (grid - 1 - j if a.flipped else j)
                # view-a crop px -> source px -> view-b crop px.
                sx = px / s * box_a.width + box_a.left
                sy = py / s * box_a.height + box_a.top
                sw = pw / s * box_a.width
                sh = ph / s * box_a.height
                bx = max((sx - box_b.left) / box_b.width * s, 0.0)
                by = max((sy - box_b.top) / box_b.height * s, 0.0)
                bw = sw / box_b.width * s
                bh = sh / box_b.height * s
                piece_area = bw * bh
                p0, p1 = _cell_range(by, by + bh, cell, crop_size)
                q0, q1 = _cell_range(bx, bx + bw, cell, crop_size)
                for p in range(p0, p1 + 1):
                    for q in range(q0, q1 + 1):
                        part = _rect_overlap(q * cell, p * cell, cell, cell, bx, by, bw, bh)
                        if part is None:
                            continue
                        beta = part[2] * part[3] / piece_area
                        weight = alpha * beta / (cell_src_a + cell_src_b) * cell_src_a
                        if weight > 0:
                            idx_b = p * grid + (grid - 1 - q if b.flipped else q)
                            pairs.append((weight, idx_a, idx_b))
    # Stable sort: equal weights keep the visiting order (rows, then columns).
    pairs = sorted(pairs, key=lambda t: -t[0])[:cap]
    pad = cap - len(pairs)
    weights = torch.tensor([p[0] for p in pairs] + [0.0] * pad, dtype=torch.float64)
    idx_a_t = torch.tensor([p[1] for p in pairs] + [0] * pad, dtype=torch.long)
    idx_b_t = torch.tensor([p[2] for p in pairs] + [0] * pad, dtype=torch.long)
    return idx_a_t, idx_b_t, weights

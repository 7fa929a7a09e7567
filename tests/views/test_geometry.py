"""View geometry: crop law, constrained crops, cropping, SlotCon overlap boxes, MGC correspondences."""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction

import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from densessl.views.geometry import (
    MGC_GRANULARITIES,
    Box,
    MGCGranularity,
    ViewRecord,
    _cell_range,
    crop_view,
    mgc_correspondences,
    overlap_boxes,
    overlap_boxes_batch,
    sample_constrained_crop,
    sample_crop,
)
from densessl.views.sampler import CropSpec, ViewSampler, records_to_tensors

RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _rec(left: int, top: int, width: int, height: int, flipped: bool = False, size: int = 224) -> ViewRecord:
    return ViewRecord(Box(left, top, width, height), flipped, (size, size))


# --------------------------------------------------------------------------------------------
# Box and crop sampling
# --------------------------------------------------------------------------------------------


def test_box_helpers() -> None:
    a, b = Box(0, 0, 100, 100), Box(50, 50, 100, 100)
    assert (a.right, a.bottom, a.area) == (100, 100, 10000)
    assert a.intersection(b) == 2500
    assert a.iou(b) == pytest.approx(2500 / 17500)
    assert a.overlap(b) == Box(50, 50, 50, 50)
    assert a.overlap(Box(100, 0, 10, 10)) is None  # touching edges share no pixel
    assert a.intersection(Box(100, 0, 10, 10)) == 0


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(480, 640, (0.2, 1.0)), (37, 53, (0.08, 1.0)), (640, 427, (0.05, 0.14)), (100, 1000, (0.9, 1.0))],
)
def test_sample_crop_is_torchvision_get_params(height: int, width: int, scale: tuple[float, float]) -> None:
    for seed in range(200):
        box = sample_crop(height, width, scale, RATIO, torch.Generator().manual_seed(seed))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            image = torch.empty(3, height, width)
            top, left, h, w = RandomResizedCrop.get_params(image, list(scale), list(RATIO))
        assert box == Box(left, top, w, h), seed


def test_sample_crop_centre_fallback() -> None:
    # 1000x100 with a large scale: no try fits, fall back to the widest 4/3 centre crop.
    box = sample_crop(100, 1000, (0.9, 1.0), RATIO, torch.Generator().manual_seed(0))
    assert box == Box(433, 0, 133, 100)


def test_constrained_with_zero_threshold_is_the_plain_law() -> None:
    ref = Box(0, 0, 50, 50)
    for seed in range(100):
        plain = sample_crop(480, 640, (0.08, 1.0), RATIO, torch.Generator().manual_seed(seed))
        box, ok = sample_constrained_crop(
            480, 640, (0.08, 1.0), RATIO, ref, "intersection", 0.0, torch.Generator().manual_seed(seed)
        )
        assert ok and box == plain


def test_constrained_threshold_honoured_and_fallback() -> None:
    ref = Box(400, 300, 240, 180)  # bottom-right corner of a 640x480 image
    accepted = 0
    for seed in range(300):
        g = torch.Generator().manual_seed(seed)
        box, ok = sample_constrained_crop(480, 640, (0.05, 0.14), RATIO, ref, "intersection", 0.1, g)
        assert box.left >= 0 and box.right <= 640 and box.top >= 0 and box.bottom <= 480
        if ok:
            accepted += 1
            # >= 10% of the sampled target area, which is within rounding of w*h.
            assert box.intersection(ref) >= 0.1 * box.area * 0.95
    assert 200 < accepted < 300  # most, not all, draws are accepted
    for seed in range(100):
        box, ok = sample_constrained_crop(
            480, 640, (0.2, 1.0), RATIO, ref, "iou", 0.2, torch.Generator().manual_seed(seed), tries=None
        )
        assert ok and box.iou(ref) > 0.2


def test_the_intersection_rule_compares_with_the_sampled_area_not_the_references() -> None:
    # a reference smaller than most crops: against its own area the rule would accept crops that
    # hold it whole yet cover little of themselves
    ref = Box(100, 100, 120, 120)
    accepted = 0
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        box, ok = sample_constrained_crop(480, 640, (0.05, 0.3), RATIO, ref, "intersection", 0.3, g)
        if ok:
            accepted += 1
            assert box.intersection(ref) >= 0.3 * box.area * 0.95, seed
    assert accepted > 20


def _reference_constrained_crop(height, width, scale, reference, threshold, generator, sampled_area=True):
    """The reference loop written out: torchvision's draws (area, log-ratio, top, left) for ten
    tries, a box accepted when ``|box & reference| >= threshold * area``, where the area is the
    sampled (float) one, or with ``sampled_area=False`` the rounded box's ``w * h``; None when no
    try is accepted."""
    log_ratio = torch.log(torch.tensor(RATIO))
    for _ in range(10):
        area = height * width * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(
            torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator)
        ).item()
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            box = Box(left, top, w, h)
            if box.intersection(reference) >= threshold * (area if sampled_area else box.area):
                return box
    return None


def test_the_intersection_rule_uses_the_sampled_area_before_its_sides_are_rounded() -> None:
    # small crops of a small image around a reference in its middle: often enough, a crop meets
    # the rule by less than the rounding of its sides, which tells the two areas apart
    ref, threshold, scale = Box(16, 16, 32, 32), 0.5, (0.1, 0.4)
    decided_by_rounding = 0
    for seed in range(300):
        want = _reference_constrained_crop(64, 64, scale, ref, threshold, torch.Generator().manual_seed(seed))
        rounded = _reference_constrained_crop(
            64, 64, scale, ref, threshold, torch.Generator().manual_seed(seed), sampled_area=False
        )
        decided_by_rounding += want != rounded
        if want is not None:
            g = torch.Generator().manual_seed(seed)
            got = sample_constrained_crop(64, 64, scale, RATIO, ref, "intersection", threshold, g)
            assert got == (want, True), seed
    assert decided_by_rounding >= 3, "the seeds no longer tell the two areas apart"


def test_constrained_impossible_constraint_falls_back() -> None:
    ref = Box(0, 0, 1, 1)
    g = torch.Generator().manual_seed(0)
    box, ok = sample_constrained_crop(480, 640, (0.2, 1.0), RATIO, ref, "intersection", 0.5, g)
    assert not ok
    # Finite tries: an unconstrained draw that follows the 10 failed tries in the stream.
    g2 = torch.Generator().manual_seed(0)
    for _ in range(10):
        sample_crop(480, 640, (0.2, 1.0), RATIO, g2, tries=1)
    assert box == sample_crop(480, 640, (0.2, 1.0), RATIO, g2)
    # Unbounded tries (MGC) are capped and fall back to the full image.
    box, ok = sample_constrained_crop(480, 640, (0.2, 1.0), RATIO, ref, "iou", 0.9, g, tries=None)
    assert not ok and box == Box(0, 0, 640, 480)
    with pytest.raises(ValueError):
        sample_constrained_crop(480, 640, (0.2, 1.0), RATIO, ref, "dice", 0.5, g)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Cropping
# --------------------------------------------------------------------------------------------


def _coord_image(height: int = 48, width: int = 64) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs, ys, (xs + ys) % 256]).to(torch.uint8)


def test_crop_view_exact_crop_and_flip() -> None:
    img = _coord_image()
    box = Box(10, 5, 20, 20)
    out = crop_view(img, box, 20, "bilinear", flip=False)
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 20)
    assert torch.equal(out, img[:, 5:25, 10:30])
    flipped = crop_view(img, box, 20, "bicubic", flip=True)
    assert torch.equal(flipped, img[:, 5:25, 10:30].flip(-1))
    assert crop_view(img, box, 7, "bicubic").shape == (3, 7, 7)


# --------------------------------------------------------------------------------------------
# SlotCon overlap boxes
# --------------------------------------------------------------------------------------------


def test_overlap_boxes_hand_made() -> None:
    a, b = _rec(0, 0, 100, 100), _rec(50, 50, 100, 100)
    assert overlap_boxes(a, b) == ((0.5, 0.5, 1.0, 1.0), (0.0, 0.0, 0.5, 0.5))
    fa, fb = _rec(0, 0, 100, 100, True), _rec(50, 50, 100, 100, True)
    assert overlap_boxes(fa, b) == ((0.0, 0.5, 0.5, 1.0), (0.0, 0.0, 0.5, 0.5))
    assert overlap_boxes(a, fb) == ((0.5, 0.5, 1.0, 1.0), (0.5, 0.0, 1.0, 0.5))
    # Different sizes: A=(10,20,200,100), B=(60,40,120,160) overlap x 60..180, y 40..120.
    box_a, box_b = overlap_boxes(_rec(10, 20, 200, 100), _rec(60, 40, 120, 160))
    assert box_a == pytest.approx((0.25, 0.2, 0.85, 1.0))
    assert box_b == pytest.approx((0.0, 0.0, 1.0, 0.5))
    assert overlap_boxes(a, _rec(100, 0, 50, 50)) is None
    # crops that only touch share no pixel: no overlap box, and not valid in the batched form
    touching = _rec(100, 20, 50, 50)
    rows = [[r.box.left, r.box.top, r.box.width, r.box.height] for r in (a, touching)]
    boxes = torch.tensor(rows)
    _, _, valid = overlap_boxes_batch(boxes[:1], torch.tensor([False]), boxes[1:], torch.tensor([False]))
    assert valid.tolist() == [False]


def _to_source(rec: ViewRecord, u: float, v: float) -> tuple[float, float]:
    """Normalised displayed-view coordinates -> source pixels."""
    x = 1.0 - u if rec.flipped else u
    return rec.box.left + x * rec.box.width, rec.box.top + v * rec.box.height


@pytest.mark.parametrize(("flip_a", "flip_b"), list(itertools.product([False, True], repeat=2)))
def test_overlap_boxes_map_to_same_source_pixels(flip_a: bool, flip_b: bool) -> None:
    a = _rec(10, 20, 200, 100, flip_a)
    b = _rec(60, 40, 120, 160, flip_b)
    box_a, box_b = overlap_boxes(a, b)
    for tx, ty in itertools.product([0.0, 0.1, 0.5, 0.77, 1.0], repeat=2):
        points = []
        for rec, (x1, y1, x2, y2) in ((a, box_a), (b, box_b)):
            # RoIAlign samples the box in displayed orientation; SlotCon then mirrors the grid of
            # flipped views back, so grid fraction tx reads box fraction 1 - tx there.
            fx = 1.0 - tx if rec.flipped else tx
            points.append(_to_source(rec, x1 + fx * (x2 - x1), y1 + ty * (y2 - y1)))
        assert points[0] == pytest.approx(points[1])
        # ... and the point lies inside the source intersection 60..180 x 40..120.
        assert 60 - 1e-9 <= points[0][0] <= 180 + 1e-9 and 40 - 1e-9 <= points[0][1] <= 120 + 1e-9


def test_overlap_boxes_batch_matches_scalar() -> None:
    g = torch.Generator().manual_seed(0)

    def random_record() -> ViewRecord:
        box = sample_crop(200, 300, (0.08, 1.0), RATIO, g)
        return ViewRecord(box, bool(torch.rand(1, generator=g) < 0.5), (7, 7))

    recs_a = [random_record() for _ in range(64)]
    recs_b = [random_record() for _ in range(64)]
    recs_b[0] = _rec(0, 0, 10, 10)  # make sure a disjoint pair is present
    recs_a[0] = _rec(100, 100, 20, 20)
    pa, pb = records_to_tensors(recs_a), records_to_tensors(recs_b)
    ca, cb, valid = overlap_boxes_batch(pa["boxes"], pa["flips"], pb["boxes"], pb["flips"])
    assert ca.dtype == torch.float32 and ca.shape == (64, 4) and valid.dtype == torch.bool
    assert not valid[0]
    assert ca[0, 2] < ca[0, 0]  # the reference's inverted box is kept for invalid rows
    for k in range(64):
        expected = overlap_boxes(recs_a[k], recs_b[k])
        assert (expected is not None) == bool(valid[k])
        if expected is not None:
            assert ca[k].tolist() == pytest.approx(expected[0], abs=1e-6)
            assert cb[k].tolist() == pytest.approx(expected[1], abs=1e-6)


# --------------------------------------------------------------------------------------------
# MGC correspondences
# --------------------------------------------------------------------------------------------


def test_mgc_granularities() -> None:
    settings = {k: dataclasses.astuple(v) for k, v in MGC_GRANULARITIES.items()}
    assert settings == {
        "patch": (16, 10, (12, 8), (2, 8), (2, 6)),
        "region32": (32, 10, (8, 4), (2, 4), (1, 3)),
        "region112": (112, 2, (1, 1), (1, 1), (1, 1)),
    }
    r112 = MGC_GRANULARITIES["region112"]
    ia, ib, w = mgc_correspondences(_rec(0, 0, 224, 224), _rec(0, 0, 224, 224), **dataclasses.asdict(r112))
    assert w.tolist() == pytest.approx([0.5, 0.5]) and ia.tolist() == ib.tolist() == [0, 1]


def test_cell_range_end_boundary() -> None:
    assert _cell_range(0.0, 64.0, 16, 224) == (0, 3)  # exactly on an edge: cell 4 not claimed
    assert _cell_range(10.0, 64.5, 16, 224) == (0, 4)
    assert _cell_range(112.0, 224.0, 16, 224) == (7, 13)
    assert _cell_range(100.0, 224.00001, 16, 224) == (6, 13)  # float overshoot clipped
    assert _cell_range(0.0, 224.0, 112, 224) == (0, 1)


@pytest.mark.parametrize(("flip_a", "flip_b"), list(itertools.product([False, True], repeat=2)))
def test_mgc_half_overlap_hand_made(flip_a: bool, flip_b: bool) -> None:
    # Same scale, view b shifted right by half a crop: overlap = right half of a, IoU = 1/3
    # -> row step int(4) = 4, column step int(2.67) = 2; cells a(r, c) == b(r, c - 7) exactly.
    a = _rec(0, 0, 224, 224, flip_a)
    b = _rec(112, 0, 224, 224, flip_b)
    ia, ib, w = mgc_correspondences(a, b)
    cells = [(r, c) for r in (0, 4, 8, 12) for c in (7, 9, 11, 13)][:10]
    exp_a = [r * 14 + (13 - c if flip_a else c) for r, c in cells]
    exp_b = [r * 14 + (13 - (c - 7) if flip_b else c - 7) for r, c in cells]
    assert ia.tolist() == exp_a
    assert ib.tolist() == exp_b
    assert w.dtype == torch.float64 and w.tolist() == pytest.approx([0.5] * 10)


def test_mgc_different_scales_and_padding() -> None:
    # View a covers 448 px (32 source px per cell), view b its top-left 224 px (16 px per cell).
    # IoU = 0.25 -> row step 3, column step 2; overlap = view-a crop [0, 112) -> cells 0..6.
    a, b = _rec(0, 0, 448, 448), _rec(0, 0, 224, 224)
    ia, ib, w = mgc_correspondences(a, b)
    assert ia.tolist() == [0, 0, 0, 0, 2, 2, 2, 2, 4, 4]
    assert ib.tolist() == [0, 1, 14, 15, 4, 5, 18, 19, 8, 9]
    assert w.tolist() == pytest.approx([256 / (1024 + 256)] * 10)
    # Region-112 of the same pair: one view-a cell (0, 0) covering all four view-b cells; the
    # top-2 of four equal weights keep the visiting order.
    ia, ib, w = mgc_correspondences(a, b, **dataclasses.asdict(MGC_GRANULARITIES["region112"]))
    assert ia.tolist() == [0, 0] and ib.tolist() == [0, 1]
    assert w.tolist() == pytest.approx([112**2 / (224**2 + 112**2)] * 2)
    # A small overlap gives fewer pairs than the cap: zero padding.
    ia, ib, w = mgc_correspondences(_rec(0, 0, 224, 224), _rec(200, 200, 224, 224))
    assert int((w > 0).sum()) == 1 and w[1:].eq(0).all() and ia[1:].eq(0).all() and ib[1:].eq(0).all()
    assert (ia[0].item(), ib[0].item()) == (12 * 14 + 12, 0)
    # Disjoint crops: all padding.
    ia, ib, w = mgc_correspondences(_rec(0, 0, 10, 10), _rec(20, 20, 10, 10))
    assert w.eq(0).all() and ia.eq(0).all() and ib.eq(0).all()


def _cell_source_rect(rec: ViewRecord, index: int, grid: int, crop: int = 224) -> tuple[Fraction, ...]:
    row, col = divmod(index, grid)
    if rec.flipped:
        col = grid - 1 - col
    cell = Fraction(crop, grid)
    sx, sy = Fraction(rec.box.width, crop), Fraction(rec.box.height, crop)
    return (
        rec.box.left + col * cell * sx,
        rec.box.top + row * cell * sy,
        rec.box.left + (col + 1) * cell * sx,
        rec.box.top + (row + 1) * cell * sy,
    )


def _rect_inter(p: tuple[Fraction, ...], q: tuple[Fraction, ...]) -> Fraction:
    w = min(p[2], q[2]) - max(p[0], q[0])
    h = min(p[3], q[3]) - max(p[1], q[1])
    return w * h if w > 0 and h > 0 else Fraction(0)


def _brute_force_weights(a: ViewRecord, b: ViewRecord, g) -> list[float]:
    """All candidate weights, restated from the spec with exact rational arithmetic."""
    grid = 224 // g.cell
    ov = a.box.overlap(b.box)
    iou = a.box.iou(b.box)
    rs = min(max(int(iou * g.stride_ratios[0]), g.row_clamp[0]), g.row_clamp[1])
    cs = min(max(int(iou * g.stride_ratios[1]), g.col_clamp[0]), g.col_clamp[1])
    x0 = Fraction(ov.left - a.box.left, a.box.width) * 224
    x1 = Fraction(ov.right - a.box.left, a.box.width) * 224
    y0 = Fraction(ov.top - a.box.top, a.box.height) * 224
    y1 = Fraction(ov.bottom - a.box.top, a.box.height) * 224
    rows = range(math.floor(y0 / g.cell), math.ceil(y1 / g.cell), rs)
    cols = range(math.floor(x0 / g.cell), math.ceil(x1 / g.cell), cs)
    weights = []
    for r, c in itertools.product(rows, cols):
        ca = _cell_source_rect(dataclasses.replace(a, flipped=False), r * grid + c, grid)
        for q in range(grid * grid):
            cb = _cell_source_rect(dataclasses.replace(b, flipped=False), q, grid)
            inter = _rect_inter(ca, cb)
            if inter > 0:
                area = lambda t: (t[2] - t[0]) * (t[3] - t[1])  # noqa: E731
                weights.append(float(inter / (area(ca) + area(cb))))
    return sorted(weights, reverse=True)


def test_mgc_random_pairs_cover_same_pixels_with_dice_weights() -> None:
    sampler = ViewSampler([CropSpec(224), CropSpec(224, reference=0, rule="iou", threshold=0.2, tries=None)])
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        a, b = sampler.sample_records(480, 640, g)
        for name, gran in MGC_GRANULARITIES.items():
            grid = 224 // gran.cell
            ia, ib, w = mgc_correspondences(a, b, **dataclasses.asdict(gran))
            assert ia.min() >= 0 and ia.max() < grid * grid and ib.max() < grid * grid
            assert torch.all(w[:-1] >= w[1:]), name  # descending, padding last
            for k in torch.nonzero(w > 1e-9).flatten().tolist():
                ca = _cell_source_rect(a, int(ia[k]), grid)
                cb = _cell_source_rect(b, int(ib[k]), grid)
                inter = _rect_inter(ca, cb)
                assert inter > 0, name  # both flipped/unflipped tokens see the same pixels
                area = lambda t: (t[2] - t[0]) * (t[3] - t[1])  # noqa: E731
                assert w[k].item() == pytest.approx(float(inter / (area(ca) + area(cb))), rel=1e-9)
            expected = _brute_force_weights(a, b, gran)[: gran.cap]
            expected += [0.0] * (gran.cap - len(expected))
            assert sorted(w.tolist(), reverse=True) == pytest.approx(expected, abs=1e-9), name


def _pixels_of_cell(rec: ViewRecord, token: int, grid: int, canvas: tuple[int, int]):
    """Boolean mask of the source pixels under token ``token`` of a view whose box is a whole
    number of source pixels per cell (the token index mirrored for a flipped view)."""
    import numpy as np

    row, col = divmod(token, grid)
    if rec.flipped:
        col = grid - 1 - col
    kx, ky = rec.box.width // grid, rec.box.height // grid
    mask = np.zeros(canvas, dtype=bool)
    top, left = rec.box.top + row * ky, rec.box.left + col * kx
    mask[top : top + ky, left : left + kx] = True
    return mask


def _candidates_by_pixel_count(a: ViewRecord, b: ViewRecord, crop: int, g: MGCGranularity) -> list[float]:
    """Every candidate weight |A & B| / (|A| + |B|) from integer source-pixel rectangles, over the
    view-a cells the strided scan visits (exclusive far edge)."""
    grid = crop // g.cell
    ov = a.box.overlap(b.box)
    iou = a.box.iou(b.box)
    rs = min(max(int(iou * g.stride_ratios[0]), g.row_clamp[0]), g.row_clamp[1])
    cs = min(max(int(iou * g.stride_ratios[1]), g.col_clamp[0]), g.col_clamp[1])
    kxa, kya = a.box.width // grid, a.box.height // grid
    kxb, kyb = b.box.width // grid, b.box.height // grid
    rows = range((ov.top - a.box.top) // kya, -(-(ov.bottom - a.box.top) // kya), rs)
    cols = range((ov.left - a.box.left) // kxa, -(-(ov.right - a.box.left) // kxa), cs)
    weights = []
    for r, c in itertools.product(rows, cols):
        ax0, ay0 = a.box.left + c * kxa, a.box.top + r * kya
        for p, q in itertools.product(range(grid), repeat=2):
            bx0, by0 = b.box.left + q * kxb, b.box.top + p * kyb
            w = min(ax0 + kxa, bx0 + kxb) - max(ax0, bx0)
            h = min(ay0 + kya, by0 + kyb) - max(ay0, by0)
            if w > 0 and h > 0:
                weights.append(w * h / (kxa * kya + kxb * kyb))
    return sorted(weights, reverse=True)


@pytest.mark.parametrize(("flip_a", "flip_b"), list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize(("crop", "scale"), [(224, 16), (48, 8)])
def test_mgc_pairs_match_a_pixel_count_with_every_flip_and_cell_aligned_edges(flip_a, flip_b, crop, scale):
    """Boxes with a whole number of source pixels per cell, half of them with edges exactly on
    the other view's cell boundaries: each kept pair's tokens must cover common source pixels,
    its weight must equal the pixel count's, and the kept set must be the count's top M."""
    import numpy as np

    gen = np.random.default_rng(crop + 2 * flip_a + flip_b)
    grains = {
        "patch": MGCGranularity(scale, 10, (12, 8), (2, 8), (2, 6)),
        "region": MGCGranularity(2 * scale, 10, (8, 4), (2, 4), (1, 3)),
    }
    canvas = (700, 700)
    checked = aligned = 0
    while checked < 12:
        grid = crop // scale
        kxa, kya, kxb, kyb = (int(v) for v in gen.integers(1, 4, size=4) * 2)
        a = ViewRecord(
            Box(int(gen.integers(0, 40)), int(gen.integers(0, 40)), grid * kxa, grid * kya),
            flip_a,
            (crop,) * 2,
        )
        if checked % 2:  # b starts on a view-a cell edge: overlap edges fall on cell boundaries
            left = a.box.left + kxa * int(gen.integers(0, grid))
            top = a.box.top + kya * int(gen.integers(0, grid))
        else:
            left, top = int(gen.integers(0, 120)), int(gen.integers(0, 120))
        b = ViewRecord(Box(left, top, grid * kxb, grid * kyb), flip_b, (crop,) * 2)
        if a.box.iou(b.box) <= 0.2:
            continue
        checked += 1
        aligned += checked % 2 == 0
        for name, gran in grains.items():
            ia, ib, w = mgc_correspondences(a, b, crop, **dataclasses.asdict(gran))
            gr = crop // gran.cell
            for k in torch.nonzero(w > 0).flatten().tolist():
                pa = _pixels_of_cell(a, int(ia[k]), gr, canvas)
                pb = _pixels_of_cell(b, int(ib[k]), gr, canvas)
                common = int(np.count_nonzero(pa & pb))
                assert common > 0, (name, k)
                dice = common / (int(pa.sum()) + int(pb.sum()))
                assert w[k].item() == pytest.approx(dice, rel=1e-9), (name, k)
            expected = _candidates_by_pixel_count(a, b, crop, gran)[: gran.cap]
            expected += [0.0] * (gran.cap - len(expected))
            assert sorted(w.tolist(), reverse=True) == pytest.approx(expected, abs=1e-9), name
    assert aligned == 6

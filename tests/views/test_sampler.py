"""The view sampler: crops per spec, references and acceptance, packed records."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from densessl.data.decode import open_image
from densessl.views.geometry import Box, ViewRecord, crop_view
from densessl.views.sampler import CropSpec, ViewSampler, records_to_tensors


def _coord_image(height: int = 48, width: int = 64) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs, ys, (xs + ys) % 256]).to(torch.uint8)


def test_view_sampler_slotcon_mgc_revisited() -> None:
    img = _coord_image(120, 160)
    slotcon = ViewSampler(
        [
            CropSpec(32, scale=(0.08, 1.0), interpolation="bicubic"),
            CropSpec(32, scale=(0.08, 1.0), interpolation="bicubic", reference=0, threshold=0.01),
        ]
    )
    crops, recs = slotcon(img, torch.Generator().manual_seed(3))
    crops2, recs2 = slotcon(img, torch.Generator().manual_seed(3))
    assert recs == recs2 and all(torch.equal(a, b) for a, b in zip(crops, crops2, strict=True))
    assert recs[1].reference == 0 and recs[0].reference is None
    for crop, rec in zip(crops, recs, strict=True):
        assert rec.size == (32, 32)
        assert torch.equal(crop, crop_view(img, rec.box, 32, "bicubic", rec.flipped))

    mgc = ViewSampler([CropSpec(24), CropSpec(24, reference=0, rule="iou", threshold=0.2, tries=None)])
    flips = []
    for seed in range(40):
        _, recs = mgc(img, torch.Generator().manual_seed(seed))
        assert recs[1].accepted and recs[1].box.iou(recs[0].box) > 0.2
        flips += [r.flipped for r in recs]
    assert 20 < sum(flips) < 60  # p = 0.5 flips

    revisited = ViewSampler(
        [CropSpec(40), CropSpec(40)]
        + [CropSpec(16, scale=(0.05, 0.14), reference=1, threshold=0.1) for _ in range(4)]
    )
    crops, recs = revisited(img, torch.Generator().manual_seed(0))
    assert [c.shape[-1] for c in crops] == [40, 40, 16, 16, 16, 16]
    assert [r.reference for r in recs] == [None, None, 1, 1, 1, 1]
    packed = records_to_tensors(recs)
    assert packed["boxes"].shape == (6, 4) and packed["boxes"].dtype == torch.long
    box3 = recs[3].box
    assert packed["boxes"][3].tolist() == [box3.left, box3.top, box3.width, box3.height]
    assert packed["flips"].tolist() == [r.flipped for r in recs]
    assert packed["accepted"].dtype == torch.bool
    assert packed["accepted"].tolist() == [r.accepted for r in recs]

    with pytest.raises(ValueError):
        ViewSampler([CropSpec(8, reference=0)])


def source_extent(crop: torch.Tensor) -> Box:
    """The source pixels a crop of a coordinate image shows, read from its pixels alone."""
    xs, ys = crop[0].int(), crop[1].int()
    left, top = int(xs.min()), int(ys.min())
    return Box(left, top, int(xs.max()) - left + 1, int(ys.max()) - top + 1)


def test_small_crops_overlap_the_view_they_are_constrained_to_in_their_pixels():
    # revisited MoCo's layout: small crops constrained to view 1 (the key), not to view 0; the
    # two large views are small enough to lie apart, so overlapping the wrong one shows
    img = _coord_image(180, 240)
    large = CropSpec(40, scale=(0.1, 0.3))
    small = CropSpec(16, scale=(0.05, 0.14), reference=1, threshold=0.1)
    sampler = ViewSampler([large, large, small, small, small, small])
    accepted = apart = 0
    for seed in range(60):
        crops, recs = sampler(img, torch.Generator().manual_seed(seed))
        key = source_extent(crops[1])
        apart += recs[0].box.intersection(recs[1].box) == 0
        for crop, rec in zip(crops[2:], recs[2:], strict=True):
            assert rec.reference == 1
            if not rec.accepted:
                continue
            accepted += 1
            # the recorded boxes obey the rule (sampled area within rounding of w*h) ...
            assert rec.box.intersection(recs[1].box) >= 0.1 * rec.box.area * 0.95, seed
            # ... and so do the pixels: a resized crop's border pixels average a few source
            # pixels inwards, so its extent read back is a little smaller than its box
            assert source_extent(crop).intersection(key) >= 0.05 * rec.box.area, seed
    assert accepted >= 0.8 * 60 * 4
    assert apart >= 5, "the test needs large views that do not overlap"


@pytest.mark.parametrize("flip_p,low,high", [(0.0, 0, 0), (1.0, 200, 200), (0.2, 25, 60)])
def test_views_are_flipped_with_their_probability(flip_p, low, high):
    sampler = ViewSampler([CropSpec(8, flip_p=flip_p)])
    img = _coord_image()
    flips = sum(sampler(img, torch.Generator().manual_seed(seed))[1][0].flipped for seed in range(200))
    assert low <= flips <= high


def _records(*boxes_and_sizes: tuple[Box, int]) -> list[ViewRecord]:
    return [ViewRecord(box=box, flipped=False, size=(size, size)) for box, size in boxes_and_sizes]


def test_reduction_is_the_largest_factor_every_view_allows_on_both_axes() -> None:
    sampler = ViewSampler([CropSpec(32), CropSpec(32)])
    assert sampler.reduction(_records((Box(0, 0, 256, 256), 32), (Box(5, 5, 128, 130), 32))) == 4
    assert sampler.reduction(_records((Box(0, 0, 256, 256), 32), (Box(5, 5, 256, 255), 32))) == 4
    assert sampler.reduction(_records((Box(0, 0, 256, 256), 32), (Box(5, 5, 63, 300), 32))) == 1
    assert sampler.reduction(_records((Box(0, 0, 256, 256), 32), (Box(0, 0, 256, 256), 32))) == 8
    assert sampler.reduction(_records((Box(0, 0, 256, 256), 32), (Box(0, 0, 256, 256), 32)), 2) == 2


def test_crops_from_a_reduced_image_match_the_full_size_crops(tmp_path) -> None:
    from tests.data.test_decode import mean_abs_diff, save, smooth

    # content that varies over ~64 source pixels, i.e. a few output pixels after the 8-20x
    # shrink of these crops: interpolation differences stay small, misplaced boxes do not
    path = save(tmp_path / "photo.jpg", Image.fromarray(smooth(480, 640, cell=64)), quality=95)
    encoded = open_image(path)
    sampler = ViewSampler(
        [CropSpec(32, scale=(0.2, 1.0)), CropSpec(32, scale=(0.2, 1.0), interpolation="bicubic")]
    )
    full = encoded.decode(1)
    used = set()
    for seed in range(8):
        crops, records = sampler(full, torch.Generator().manual_seed(seed))
        # the boxes come from the header's size alone, in original pixels, whatever the decode
        assert sampler.sample_records(*encoded.size, torch.Generator().manual_seed(seed)) == records
        reduction = sampler.reduction(records)
        used.add(reduction)
        reduced = sampler.crop(encoded.decode(reduction), records, encoded.size)
        for spec, a, b, record in zip(sampler.specs, crops, reduced, records, strict=True):
            assert a.shape == b.shape == (3, 32, 32)
            error = mean_abs_diff(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy())
            # rounding moves a box edge by half a reduced pixel at most, r/2 source pixels: the
            # reduced crop must be closer than the full-size crop of the box moved by r pixels
            box = record.box
            moved = Box(
                box.left + reduction, box.top + reduction, box.width - reduction, box.height - reduction
            )
            shifted = crop_view(full, moved, 32, spec.interpolation, record.flipped)
            bound = mean_abs_diff(a.permute(1, 2, 0).numpy(), shifted.permute(1, 2, 0).numpy())
            assert error < bound if reduction > 1 else error == 0, (seed, reduction, error, bound)
    assert used >= {4, 8}


def test_boxes_map_onto_a_reduced_image_by_its_actual_size_per_axis() -> None:
    sampler = ViewSampler([CropSpec(8)])

    def mapped(original: tuple[int, int], reduced_size: tuple[int, int], box: Box) -> Box:
        reduced = _coord_image(*reduced_size)
        crop = sampler.crop(reduced, _records((box, 8)), original)[0]
        # find the box whose plain crop gives exactly this view
        for candidate in _boxes_near(box, original, reduced_size):
            if torch.equal(crop, crop_view(reduced, candidate, 8)):
                return candidate
        raise AssertionError("no box of the reduced image gives this crop")

    # each axis by its own ratio: 80 -> 40 rows, 400 -> 100 columns
    assert mapped((80, 400), (40, 100), Box(200, 20, 120, 40)) == Box(50, 10, 30, 20)
    # a decoder that rounds 101 columns up to 51: a box reaching the right edge still does
    assert mapped((76, 101), (38, 51), Box(1, 0, 100, 76)) == Box(1, 0, 50, 38)


def _boxes_near(box: Box, original: tuple[int, int], reduced: tuple[int, int]) -> list[Box]:
    sy, sx = reduced[0] / original[0], reduced[1] / original[1]
    left, top = int(box.left * sx), int(box.top * sy)
    right, bottom = int(box.right * sx), int(box.bottom * sy)
    return [
        Box(x0, y0, x1 - x0, y1 - y0)
        for x0 in (left - 1, left, left + 1)
        for y0 in (top - 1, top, top + 1)
        for x1 in (right - 1, right, right + 1)
        for y1 in (bottom - 1, bottom, bottom + 1)
        if 0 <= x0 < x1 <= reduced[1] and 0 <= y0 < y1 <= reduced[0]
    ]

"""The view sampler: crops per spec, references and acceptance, packed records."""

from __future__ import annotations

import pytest
import torch

from densessl.views.geometry import crop_view
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

"""The match picture: its pairs are the method's own correspondences (DenseCL's argmax, SlotCon's
aligned cells, MGC's view targets), drawn where they are, and the command around them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from densessl.augment import normalize
from densessl.cli import main
from densessl.config import load_config
from densessl.data.synthetic import SyntheticScenes, resolve_config
from densessl.methods.densecl import match_locations
from densessl.methods.mgc import correspondence_targets
from densessl.methods.slotcon import align_to_overlap
from densessl.training.trainer import build_model
from densessl.views.geometry import Box, ViewRecord, crop_view, overlap_boxes_batch
from densessl.viz.matches import (
    CellPairs,
    colour,
    draw_pairs,
    method_pairs,
    offset_cells,
    sample_views,
    source_points,
)
from tests.export.helpers import densessl_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY_DENSECL = ["model.width=0.125", "method.queue_size=16", "method.hidden_dim=16", "views.*.crop.size=32"]
TINY_SLOTCON = [
    "model.width=0.125",
    "method.num_prototypes=8",
    "method.hidden_dim=16",
    "views.*.crop.size=32",
]
TINY_MGC = ["model.depth=1", "method.hidden_dim=16", "method.dim=8"]


def tiny(recipe: str, overrides: list[str]):
    config = load_config(ROOT / "densessl/recipes" / recipe, overrides)
    torch.manual_seed(0)
    return build_model(config).eval(), config


def scene(index: int = 0) -> np.ndarray:
    return np.asarray(SyntheticScenes(resolve_config("easy"), "val", index + 1)[index][0])


def views_of(image: np.ndarray, records: list[ViewRecord]) -> list[torch.Tensor]:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return [crop_view(tensor, r.box, r.size, flip=r.flipped) for r in records]


def test_densecl_pairs_are_match_locations_of_the_query_and_key_backbones():
    method, config = tiny("quick/densecl_synthetic.yaml", TINY_DENSECL)
    with torch.no_grad():  # a teacher that differs from the student, as after training
        for p in method.encoder_k.parameters():
            p.add_(0.05 * torch.randn_like(p))
    crops, records, size = sample_views(config, scene(), seed=3)
    (pairs,) = method_pairs(method, config, crops, records, size)
    with torch.no_grad():
        q = method.encoder_q.backbone(normalize(crops[0][None]))
        k = method.encoder_k.backbone(normalize(crops[1][None]))
    h, w = q.shape[-2:]
    assert pairs.grid == (h, w) and torch.equal(pairs.index1, torch.arange(h * w))
    assert torch.equal(pairs.index2, match_locations(q, k)[0])
    cosine = torch.einsum(
        "cs,ct->st", F.normalize(q[0].flatten(1), dim=0), F.normalize(k[0].flatten(1), dim=0)
    )
    assert torch.allclose(pairs.similarity, cosine.max(dim=1).values, atol=1e-5)
    # each end at its cell's centre: row-major index, x from the column
    for s in (1, w + 2, h * w - 1):
        row, col = divmod(int(pairs.index2[s]), w)
        assert pairs.points2[s].tolist() == pytest.approx([(col + 0.5) / w, (row + 0.5) / h])
    assert pairs.points1[1].tolist() == pytest.approx([1.5 / w, 0.5 / h])


def test_densecl_matches_each_location_to_itself_in_two_equal_views():
    method, config = tiny("quick/densecl_synthetic.yaml", TINY_DENSECL)  # teacher == student
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)  # every cell differs
    record = ViewRecord(Box(4, 4, 32, 32), True, (32, 32))
    crops = views_of(noise, [record, record])
    (pairs,) = method_pairs(method, config, crops, [record, record], (40, 40))
    assert torch.equal(pairs.index2, pairs.index1)
    assert torch.allclose(pairs.similarity, torch.ones(len(pairs.index1)), atol=1e-5)
    assert offset_cells(pairs, [record, record]).max() < 1e-9


def test_slotcon_aligned_cells_are_where_roialign_reads_and_show_one_source_pixel():
    method, config = tiny("quick/slotcon_synthetic.yaml", TINY_SLOTCON)
    image = scene(1)
    # the second crop is mirrored, smaller and shifted: the overlap is part of each view
    records = [
        ViewRecord(Box(10, 20, 120, 110), False, (32, 32)),
        ViewRecord(Box(60, 40, 100, 90), True, (32, 32)),
    ]
    crops = views_of(image, records)
    (pairs,) = method_pairs(method, config, crops, records, image.shape[:2])
    with torch.no_grad():
        scores1 = method.grouping_q(method.projector_q(method.encoder_q(normalize(crops[0][None]))))[1]
        scores2 = method.grouping_k(method.projector_k(method.encoder_k(normalize(crops[1][None]))))[1]
    boxes = torch.tensor([[r.box.left, r.box.top, r.box.width, r.box.height] for r in records])
    flips = torch.tensor([r.flipped for r in records])
    box1, box2, valid = overlap_boxes_batch(boxes[None, 0], flips[None, 0], boxes[None, 1], flips[None, 1])
    assert bool(valid[0]) and pairs.regions is not None
    assert [*pairs.regions[0], *pairs.regions[1]] == pytest.approx([*box1[0].tolist(), *box2[0].tolist()])
    for scores, box, flip, points in (
        (scores1, box1, flips[None, 0], pairs.points1),
        (scores2, box2, flips[None, 1], pairs.points2),
    ):
        aligned = align_to_overlap(scores, box, flip)[0].flatten(1).t()  # (h*w, K), what the loss compares
        # the scores at the drawn point (bilinear, edge values beyond the border, as RoIAlign) are those
        grid = (points.float() * 2 - 1).view(1, 1, -1, 2)
        read = F.grid_sample(scores, grid, align_corners=False, padding_mode="border")[0, :, 0].t()
        assert torch.allclose(read, aligned, atol=1e-5)
    expected = F.cosine_similarity(
        align_to_overlap(scores1, box1, flips[None, 0]),
        align_to_overlap(scores2, box2, flips[None, 1]),
        dim=1,
    )
    assert torch.allclose(pairs.similarity, expected.flatten(), atol=1e-6)
    # away from the views' borders (where RoIAlign reads the edge value) both ends show one pixel
    h, w = pairs.grid
    inner = ((pairs.points1 > 0.5 / w) & (pairs.points1 < 1 - 0.5 / w)).all(1)
    inner &= ((pairs.points2 > 0.5 / w) & (pairs.points2 < 1 - 0.5 / w)).all(1)
    assert inner.sum() >= 4
    a, b = source_points(pairs.points1, records[0]), source_points(pairs.points2, records[1])
    assert (a - b)[inner].abs().max() < 1e-3
    # and they lie in the crops' overlap (x 60..130, y 40..130)
    assert a[:, 0].min() >= 60 and a[:, 0].max() <= 130 and a[:, 1].min() >= 40 and a[:, 1].max() <= 130


def test_mgc_pairs_are_its_view_targets_without_padding_and_overlap_in_the_image():
    method, config = tiny("quick/mgc_synthetic.yaml", TINY_MGC)
    image = scene(2)
    records = [
        ViewRecord(Box(0, 10, 110, 100), True, (48, 48)),
        ViewRecord(Box(40, 30, 120, 110), False, (48, 48)),
    ]
    crops = views_of(image, records)
    found = method_pairs(method, config, crops, records, image.shape[:2])
    patch = config.model.patch_size
    cells = {
        g.name: {
            "cell": g.tokens * patch,
            "cap": g.cap,
            "stride_ratios": tuple(g.stride_ratios),
            "row_clamp": tuple(g.row_clamp),
            "col_clamp": tuple(g.col_clamp),
        }
        for g in config.method.groupings
    }
    targets = correspondence_targets(records, image.shape[:2], 48, cells)
    assert [p.name for p in found] == [f"{g.name} pairs" for g in config.method.groupings]
    for pairs, g in zip(found, config.method.groupings, strict=True):
        keep = targets[f"{g.name}.weight"] > 0
        assert keep.sum() > 0 and torch.equal(pairs.index1, targets[f"{g.name}.index1"][keep])
        assert torch.equal(pairs.index2, targets[f"{g.name}.index2"][keep])
        side = 48 // (g.tokens * patch)
        assert pairs.grid == (side, side) and pairs.similarity.shape == pairs.index1.shape
        # the two cells' footprints in the source image intersect
        a, b = source_points(pairs.points1, records[0]), source_points(pairs.points2, records[1])
        half = torch.tensor([(r.box.width / side, r.box.height / side) for r in records]).sum(0) / 2
        assert ((a - b).abs() < half).all()


def test_a_line_runs_from_the_view1_cell_to_the_view2_cell_in_its_colour():
    grey = np.full((16, 16, 3), 128, np.uint8)
    pairs = CellPairs(
        "test",
        (2, 2),
        torch.tensor([0, 3]),
        torch.tensor([3, 1]),
        torch.tensor([[0.25, 0.25], [0.75, 0.75]]),
        torch.tensor([[0.75, 0.75], [0.75, 0.25]]),
        torch.tensor([1.0, 0.0]),
    )
    tile, gap = 80, 20
    row = np.asarray(draw_pairs(grey, grey, pairs, tile, gap, 0.0, 1.0))
    assert row.shape == (tile, 2 * tile + gap, 3)
    assert tuple(row[20, 20]) == colour(1.0, 0.0, 1.0)  # view 1, cell 0
    assert tuple(row[60, tile + gap + 60]) == colour(1.0, 0.0, 1.0)  # view 2, cell 3
    assert tuple(row[60, 60]) == colour(0.0, 0.0, 1.0) and tuple(row[20, tile + gap + 60]) == colour(
        0.0, 0.0, 1.0
    )
    assert tuple(row[70, 10]) == (128, 128, 128)  # off every line


def test_viz_matches_draws_a_densecl_checkpoint_and_lists_its_pairs(tmp_path, capsys):
    densessl_checkpoint(tmp_path / "d.pt", "quick/densecl_synthetic.yaml", TINY_DENSECL)
    out = tmp_path / "m.png"
    argv = ["viz", "matches", str(tmp_path / "d.pt"), "--data", "synthetic", "--limit", "2", "--tile", "64"]
    assert main([*argv, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        summary["method"] == "densecl"
        and summary["images"] == 2
        and summary["pairs"] == {"argmax matches": 32}
    )
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 2 * 64 and png.height > 2 * 64
    saved = json.loads((tmp_path / "m.png.json").read_text())["pictures"]
    assert [p["name"] for p in saved] == ["val:0", "val:1"]
    assert len(saved[0]["grids"][0]["pairs"]) == 16 and saved[0]["grids"][0]["grid"] == [4, 4]


def test_viz_matches_says_in_one_line_that_mocov2_has_no_correspondences(tmp_path, capsys):
    densessl_checkpoint(
        tmp_path / "m.pt", "quick/mocov2_synthetic.yaml", ["model.width=0.125", "method.queue_size=16"]
    )
    out = tmp_path / "m.png"
    assert main(["viz", "matches", str(tmp_path / "m.pt"), "--data", "synthetic", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "mocov2" in err and "no correspondences" in err and "\n" not in err
    assert not out.exists()

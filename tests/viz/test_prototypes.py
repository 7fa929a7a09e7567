"""Prototype pictures (evaluation spec A6): scoring, choice, purity, tint and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densessl.cli import main
from densessl.config import load_config
from densessl.training.trainer import Trainer
from densessl.viz.prototypes import (
    TINT,
    choose_prototypes,
    prototype_image_scores,
    purity,
    resize_center_crop,
    tint,
    upsampled_assignment,
)
from tests.export.helpers import MOCO_VIT, densessl_checkpoint
from tests.helpers import METHOD_TINY, QUICK_TINY

ROOT = Path(__file__).resolve().parents[2]
TINY_SLOTCON = [*QUICK_TINY, *METHOD_TINY["slotcon"]]


def test_image_score_is_the_mean_cosine_over_the_locations_assigned_to_the_prototype():
    # image 0: prototype 0 wins (0,0) with 0.9 and (0,1) with 0.5; prototype 1 wins the bottom row
    dots = torch.tensor(
        [
            [[[0.9, 0.5], [0.1, 0.0]], [[0.2, 0.4], [0.8, 0.6]], [[0.0, 0.0], [0.0, 0.0]]],
            [[[0.1, 0.1], [0.1, 0.1]], [[0.0, 0.0], [0.0, 0.0]], [[0.3, 0.3], [0.3, 0.7]]],
        ]
    )
    scores = prototype_image_scores(dots)
    expected = torch.tensor([[0.7, 0.7, 0.0], [0.0, 0.0, 0.4]])
    assert torch.allclose(scores, expected)


def test_only_prototypes_that_win_somewhere_are_sampled_and_the_draw_is_seeded():
    dots = torch.zeros(4, 10, 3, 3)
    used = [1, 3, 4, 7, 9]
    for n in range(4):  # every location is won by one of `used`
        for cell in range(9):
            dots[n, used[(n + cell) % len(used)]].view(-1)[cell] = 1.0
    assert choose_prototypes(dots, 0) == used
    picked = choose_prototypes(dots, 3, seed=5)
    assert len(picked) == 3 and set(picked) <= set(used) and picked == sorted(picked)
    assert picked == choose_prototypes(dots, 3, seed=5)


def test_purity_is_many_to_one_accuracy_ignoring_255():
    assignment = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    masks = np.array([[5, 5, 1, 2], [3, 3, 255, 5]])
    # prototype 0 -> class 5 (3 of 3), prototype 1 -> 1 or 2 (1 of 2), prototype 2 -> 3 (2 of 2)
    assert purity(assignment, masks, num_prototypes=3) == pytest.approx(6 / 7)


def test_tint_blends_the_region_outlines_it_and_dims_the_rest():
    image = np.full((6, 6, 3), 100, np.uint8)
    image[..., 0] = 200  # a reddish picture: the rest turns grey, its luma dimmed
    region = np.zeros((6, 6), bool)
    region[1:5, 1:5] = True
    out = tint(image, region)
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 100
    assert (out[~region] == round(0.6 * luma)).all()
    assert (out[2, 2] == np.round(0.4 * np.array([200, 100, 100]) + 0.6 * np.array(TINT))).all()  # blended
    assert (out[1, 3] == TINT).all()  # edge of the region: outline


def test_assignment_upsampling_is_bilinear_then_argmax():
    dots = torch.zeros(1, 2, 1, 2)
    dots[0, 0, 0, 0] = dots[0, 1, 0, 1] = 1.0
    assignment = upsampled_assignment(dots, 4)
    assert assignment.shape == (1, 4, 4)
    assert (assignment[0, :, :2] == 0).all() and (assignment[0, :, 2:] == 1).all()


def test_resize_center_crop_keeps_the_centre():
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, :, 18:22] = 255
    out = resize_center_crop(image, 10, 10, nearest=True)
    assert out.shape == (3, 10, 10)
    assert (out[:, :, 4:6] == 255).all() and (out[:, :, :4] == 0).all()


@pytest.fixture(scope="module")
def slotcon_checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("slotcon")
    config = load_config(ROOT / "densessl/recipes/quick/slotcon_synthetic.yaml", TINY_SLOTCON)
    return Path(Trainer(config, run).fit()["checkpoint"])


def test_viz_prototypes_draws_the_grid_and_writes_its_figures(slotcon_checkpoint, tmp_path, capsys):
    out = tmp_path / "protos.png"
    argv = ["viz", "prototypes", str(slotcon_checkpoint), "--data", "synthetic:easy", "--limit", "12"]
    argv += ["--topk", "3", "--sampling", "2", "--out", str(out), "--tile", "40"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    figures = json.loads(Path(f"{out}.json").read_text())
    assert printed["images"] == figures["images"] == 12 and figures["num_prototypes"] == 8
    assert 0.0 < figures["purity_floor"] <= figures["purity"] <= 1.0
    shown = figures["prototypes"]
    assert 1 <= len(shown) <= 2 and all(len(p["top"]) == 3 for p in shown)
    for p in shown:
        assert p["pixel_share"] > 0
        assert [t["score"] for t in p["top"]] == sorted((t["score"] for t in p["top"]), reverse=True)
    picture = np.asarray(Image.open(out).convert("RGB"))
    # 3 rows of 40-px tiles below a header; one column per shown prototype
    assert picture.shape[0] == 16 + 3 * 44 + 4 and picture.shape[1] == 28 + len(shown) * 44 + 4
    first_tile = picture[20:60, 32:72].astype(int)
    assert first_tile.std() > 0 and (first_tile[..., 0] >= 0.6 * 255 - 1).any()  # a picture, tinted


def test_viz_prototypes_reads_an_image_folder_and_names_a_corrupt_file(slotcon_checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    argv = ["viz", "prototypes", str(slotcon_checkpoint), "--data", str(folder), "--topk", "2"]
    assert main([*argv, "--out", str(tmp_path / "a.png")]) == 0
    figures = json.loads((tmp_path / "a.png.json").read_text())
    assert figures["images"] == 4 and figures["image_size"] == 32 and "purity" not in figures
    assert figures["prototypes"][0]["top"][0]["image"].endswith(".png")

    (folder / "9_broken.jpg").write_bytes(b"not a jpeg")
    assert main([*argv, "--out", str(tmp_path / "b.png")]) == 2
    assert "9_broken.jpg" in capsys.readouterr().err


def test_viz_prototypes_refuses_a_method_without_prototypes(tmp_path, capsys):
    recipe = ROOT / "densessl/recipes/quick/mocov2_synthetic.yaml"
    tiny = [o for o in TINY_SLOTCON if not o.startswith("method.")]
    tiny += ["method.queue_size=16", "train.max_steps=1"]
    checkpoint = Trainer(load_config(recipe, tiny), tmp_path / "moco").fit()["checkpoint"]
    argv = ["viz", "prototypes", checkpoint, "--data", "synthetic", "--out", str(tmp_path / "p.png")]
    assert main(argv) == 2
    assert "no prototypes" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_prototypes_of_a_slotcon_vit_at_a_size_off_its_patch_grid(tmp_path, capsys):
    vit = [o for o in MOCO_VIT if not o.startswith("method.")]
    overrides = [*vit, "method.num_prototypes=8", "method.hidden_dim=16"]
    densessl_checkpoint(tmp_path / "s.pt", "quick/slotcon_synthetic.yaml", overrides)
    out = tmp_path / "protos.png"
    # 36 px crops are 4.5 patches of 8: the teacher sees them at 32 px, the tiles stay at 36
    argv = ["viz", "prototypes", str(tmp_path / "s.pt"), "--data", "synthetic", "--limit", "6"]
    assert main([*argv, "--size", "36", "--topk", "2", "--sampling", "3", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["image_size"] == 36 and summary["feature_map"] == [4, 4] and summary["num_prototypes"] == 8
    with Image.open(out) as png:
        assert png.format == "PNG"

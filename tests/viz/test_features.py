"""The feature picture: principal components as colours, and ``viz features`` on ViT checkpoints
(a reference MGC file with either encoder, a densessl one); ``viz prototypes`` on files that
hold no prototypes says where to look instead."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from densessl.cli import main
from densessl.viz.features import pca_colours
from tests.export.helpers import MOCO_VIT, densessl_checkpoint, mgc_checkpoint


def test_pca_colours_span_the_unit_cube_and_follow_the_leading_direction():
    torch.manual_seed(0)
    # two groups of locations that differ along one channel: the first component separates them
    dense = torch.randn(2, 16, 4, 4) * 0.01
    dense[:, 0] += 1.0
    dense[0, 1, :2] += 3.0
    colours, explained = pca_colours(dense)
    assert colours.shape == (2, 3, 4, 4) and colours.min() >= 0 and colours.max() <= 1
    assert explained == sorted(explained, reverse=True) and 0.9 < explained[0] <= 1
    red = colours[:, 0]
    group = torch.zeros(2, 4, 4, dtype=torch.bool)
    group[0, :2] = True
    inside, outside = red[group], red[~group]  # a component's sign is arbitrary
    assert inside.min() - outside.max() > 0.5 or outside.min() - inside.max() > 0.5


@pytest.mark.parametrize("encoder", ["query", "teacher"])
def test_viz_features_draws_an_mgc_vit(tmp_path, capsys, encoder):
    mgc_checkpoint(tmp_path / "checkpoint0800.pth")
    out = tmp_path / f"{encoder}.png"
    argv = ["viz", "features", "--weights", str(tmp_path / "checkpoint0800.pth"), "--encoder", encoder]
    # 36 px crops: not a multiple of the patch size, the backbone sees 32 px
    argv += ["--data", "synthetic", "--limit", "3", "--size", "36", "--tile", "40", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["feature_map"] == [4, 4] and summary["channels"] == 192
    assert summary["model"]["arch"] == "vit_tiny" and summary["encoder"] == encoder
    with Image.open(out) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.width > 2 * 40 and png.height > 3 * 40
    assert json.loads((tmp_path / f"{encoder}.png.json").read_text())["names"][0] == "val:0"


def prototypes_error(checkpoint, capsys) -> str:
    """The error line of ``viz prototypes`` on ``checkpoint``, which must write no picture."""
    out = checkpoint.with_name("p.png")
    assert main(["viz", "prototypes", str(checkpoint), "--data", "synthetic", "--out", str(out)]) == 2
    assert not out.exists()
    return capsys.readouterr().err.strip()


def test_viz_features_and_prototypes_on_a_densessl_vit(tmp_path, capsys):
    densessl_checkpoint(tmp_path / "v.pt", "quick/mocov2_synthetic.yaml", MOCO_VIT)
    argv = ["viz", "features", "--weights", str(tmp_path / "v.pt"), "--data", "synthetic", "--limit", "2"]
    assert main([*argv, "--out", str(tmp_path / "f.png")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["image_size"] == 32 and summary["feature_map"] == [4, 4]  # the ViT's img_size
    assert (tmp_path / "f.png").is_file()
    # MoCo-v2 has no prototypes: one line that names the picture it does have
    err = prototypes_error(tmp_path / "v.pt", capsys)
    assert "has no prototypes" in err and "viz features --weights" in err and "\n" not in err


def test_viz_prototypes_on_a_reference_file_points_to_viz_features(tmp_path, capsys):
    mgc_checkpoint(tmp_path / "mgc.pth")
    err = prototypes_error(tmp_path / "mgc.pth", capsys)
    assert err.startswith("densessl: error:") and "not a densessl training checkpoint" in err
    assert "viz features --weights" in err and "\n" not in err

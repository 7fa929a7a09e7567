"""The feature picture: principal components as colours, ``viz pca`` (and its older name ``viz
features``) on ResNet and ViT checkpoints (a reference MGC file with either encoder, a densessl
one); ``viz prototypes`` on files that hold no prototypes says where to look instead."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from densessl.cli import main
from densessl.viz.features import pca_colours, principal_components
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


def test_principal_components_recover_three_known_directions():
    torch.manual_seed(0)
    channels = 12
    directions = torch.linalg.qr(torch.randn(channels, 4))[0].t()  # 4 orthonormal rows
    base, known = directions[0], directions[1:]
    # every location: one shared offset (gone after centring) plus coordinates along the three
    # directions with spreads 3 : 2 : 1, and a little noise in the other channels
    # (uncorrelated over the locations by construction: orthogonal, centred columns)
    columns = torch.randn(2 * 8 * 8, 3)
    columns = torch.linalg.qr(columns - columns.mean(dim=0))[0]
    coordinates = columns * torch.tensor([3.0, 2.0, 1.0]) * 0.2
    points = 1.0 * base + coordinates @ known + torch.randn(2 * 8 * 8, channels) * 1e-4
    dense = points.reshape(2, 8, 8, channels).permute(0, 3, 1, 2)
    found, projected, explained = principal_components(dense, 3)
    assert found.shape == (3, channels) and projected.shape == (2 * 8 * 8, 3)
    # each direction up to its sign, in the order of their spread
    alignment = (found.float() @ known.t()).abs()
    assert torch.allclose(alignment, torch.eye(3), atol=0.01)
    assert explained == sorted(explained, reverse=True) and sum(explained) > 0.99
    assert explained[0] / explained[2] == pytest.approx(9, rel=0.05)
    # the colours follow the coordinates: red from the widest direction, blue from the narrowest
    colours, _ = pca_colours(dense)
    rgb = colours.permute(0, 2, 3, 1).reshape(-1, 3)
    for channel in range(3):
        r = torch.corrcoef(torch.stack([rgb[:, channel], coordinates[:, channel]]))[0, 1]
        assert r.abs() > 0.95


def test_viz_pca_takes_the_checkpoint_by_position(tmp_path, capsys):
    densessl_checkpoint(
        tmp_path / "d.pt", "quick/densecl_synthetic.yaml", ["model.width=0.125", "method.queue_size=16"]
    )
    out = tmp_path / "pca.png"
    argv = ["viz", "pca", str(tmp_path / "d.pt"), "--data", "synthetic", "--limit", "2", "--size", "32"]
    assert main([*argv, "--tile", "32", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["weights"] == str(tmp_path / "d.pt") and summary["feature_map"] == [4, 4]
    assert summary["model"]["arch"] == "resnet18" and out.is_file()
    # the weights once: by position or by --weights
    assert main([*argv, "--weights", str(tmp_path / "d.pt"), "--out", str(out)]) == 2
    assert "give the weights once" in capsys.readouterr().err
    assert main(["viz", "pca", "--data", "synthetic", "--out", str(out)]) == 2
    assert "give the weights" in capsys.readouterr().err


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

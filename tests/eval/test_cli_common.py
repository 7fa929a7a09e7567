"""The backbone options every eval protocol shares, on ViT checkpoints: --encoder picks the
network, --num-heads and --patch-size shape a ViT, and a role a file lacks is one line."""

from __future__ import annotations

import argparse

import pytest
import torch

from densessl.errors import CheckpointError, ConfigError
from densessl.eval.cli_common import add_backbone_arguments, backbone_from_args
from densessl.export import export
from densessl.models.vit import ViTBackbone
from tests.export.helpers import mgc_checkpoint


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_backbone_arguments(parser)
    return parser.parse_args(list(argv))


def test_encoder_picks_the_online_or_the_momentum_vit_of_an_mgc_checkpoint(tmp_path):
    online, momentum = mgc_checkpoint(tmp_path / "mgc.pth")
    for argv, expected in (
        ([], online),
        (["--encoder", "query"], online),
        (["--encoder", "teacher"], momentum),
    ):
        backbone = backbone_from_args(parse("--weights", str(tmp_path / "mgc.pth"), *argv))
        assert isinstance(backbone, ViTBackbone) and backbone.num_heads == 8  # MGC's, by default
        state = backbone.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), argv
    backbone = backbone_from_args(parse("--weights", str(tmp_path / "mgc.pth"), "--num-heads", "3"))
    assert backbone.num_heads == 3
    with pytest.raises(CheckpointError, match="width 192 is not divisible by 7 heads"):
        backbone_from_args(parse("--weights", str(tmp_path / "mgc.pth"), "--num-heads", "7"))


def test_a_role_the_file_does_not_hold_is_one_line(tmp_path):
    mgc_checkpoint(tmp_path / "mgc.pth")
    export(tmp_path / "mgc.pth", tmp_path / "vit.pth", to="vit")
    with pytest.raises(CheckpointError, match="holds no 'teacher' encoder; it holds: backbone"):
        backbone_from_args(parse("--weights", str(tmp_path / "vit.pth"), "--encoder", "teacher"))
    with pytest.raises(SystemExit):
        parse("--weights", "x", "--encoder", "student")


def test_a_random_vit_takes_its_patch_size(tmp_path):
    backbone = backbone_from_args(parse("--weights", "random", "--arch", "vit_tiny", "--patch-size", "8"))
    assert isinstance(backbone, ViTBackbone) and backbone.patch_size == 8
    assert backbone(torch.zeros(1, 3, 32, 32)).shape == (1, 192, 4, 4)
    with pytest.raises(
        ConfigError, match="--weights random: vit_tiny: width 192 is not divisible by 7 heads"
    ):
        backbone_from_args(parse("--weights", "random", "--arch", "vit_tiny", "--num-heads", "7"))

"""The backbone swap of ``benchmarks/seed_spread.py``: which initial weights a swapped run starts from."""

import importlib.util
from pathlib import Path

import pytest
import torch

from densessl.compare import CompareSettings, recipe_config
from densessl.training.trainer import build_initial_model

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "seed_spread.py"
_spec = importlib.util.spec_from_file_location("seed_spread", _PATH)
seed_spread = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_spread)


def config(method: str, seed: int):
    return recipe_config(method, CompareSettings(), [f"train.seed={seed}"])


@pytest.mark.parametrize(
    ("method", "names"),
    [
        ("mocov2", ["encoder_q.backbone", "encoder_k.backbone"]),
        ("slotcon", ["encoder_q", "encoder_k"]),
        ("mgc", ["base_encoder", "momentum_encoder"]),
    ],
)
def test_the_backbones_of_a_method_are_its_query_and_momentum_encoders(method, names):
    found = seed_spread.outer_backbones(build_initial_model(config(method, 0)))
    assert sorted(found) == sorted(names)


def test_a_swapped_run_starts_from_the_donors_backbone_and_its_own_heads_and_draws():
    own = build_initial_model(config("mocov2", 1))
    own_draw = torch.rand(4)  # the first draw after the build: data order and augmentations follow
    donor = build_initial_model(config("mocov2", 0))
    swapped = seed_spread.initial_model_with_backbone_of(config("mocov2", 1), donor=0)
    swapped_draw = torch.rand(4)
    assert torch.equal(swapped_draw, own_draw)
    state, own_state, donor_state = swapped.state_dict(), own.state_dict(), donor.state_dict()
    backbone_keys = [k for k in state if ".backbone." in k]
    assert len(backbone_keys) == 240
    for key, value in state.items():
        expected = donor_state[key] if key in backbone_keys else own_state[key]
        assert torch.equal(value, expected), key
    assert not torch.equal(own_state[backbone_keys[0]], donor_state[backbone_keys[0]])


def test_a_run_swapped_with_its_own_seed_is_the_run_itself():
    own = build_initial_model(config("mocov2", 3)).state_dict()
    same = seed_spread.initial_model_with_backbone_of(config("mocov2", 3), donor=3).state_dict()
    assert all(torch.equal(own[key], same[key]) for key in own)

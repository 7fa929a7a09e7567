"""Checkpoint pieces on their own: the RNG state a resume restores, and the checksum of the contents."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from densessl.errors import CheckpointError
from densessl.models.vit import ViTBackbone
from densessl.training.checkpoint import (
    FORMAT,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_atomic,
    state_digest,
)


def stochastic_outputs(dropout: nn.Module, vit: nn.Module) -> tuple[torch.Tensor, ...]:
    """What the global generator decides in a training step: a dropout mask, drop-path choices,
    and a draw from each of Python's and NumPy's generators."""
    mask = dropout(torch.ones(64)) != 0
    tokens = vit.tokens(torch.ones(2, 3, 32, 32))
    return mask, tokens, torch.tensor(random.random()), torch.tensor(np.random.rand())


def test_a_restored_rng_state_gives_stochastic_layers_the_same_masks(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    vit = ViTBackbone("vit_tiny", patch_size=8, img_size=32, drop_path_rate=0.5).train()
    dropout = nn.Dropout(p=0.5).train()
    # through a checkpoint file, as a resume does
    save_atomic({"format": FORMAT, "rng": rng_state()}, tmp_path / "ckpt.pt")
    first = stochastic_outputs(dropout, vit)
    # the run goes on and draws more before it is stopped
    for _ in range(3):
        stochastic_outputs(dropout, vit)
    assert not torch.equal(stochastic_outputs(dropout, vit)[1], first[1]), "drop path never dropped"
    restore_rng_state(load_checkpoint(tmp_path / "ckpt.pt")["rng"])
    again = stochastic_outputs(dropout, vit)
    for name, a, b in zip(("dropout", "drop path", "python", "numpy"), first, again, strict=True):
        assert torch.equal(a, b), name


def test_the_digest_sees_every_tensor_byte_and_every_value_but_the_checksum():
    w, n = torch.arange(6, dtype=torch.float32).reshape(2, 3), torch.tensor(3)
    state = {"format": FORMAT, "model": {"w": w, "n": n}, "step": 7, "rng": {"torch": torch.get_rng_state()}}
    digest = state_digest(state)
    assert state_digest({**state, "checksum": "anything"}) == digest
    one_element = w.clone()
    one_element[1, 2] += 0.5
    changed = {
        "a value": {**state, "step": 8},
        "one element": {**state, "model": {"w": one_element, "n": n}},
        "the shape": {**state, "model": {"w": w.reshape(3, 2), "n": n}},
        "the dtype": {**state, "model": {"w": w.double(), "n": n}},
        "a name": {**state, "model": {"weight": w, "n": n}},
        "an empty tensor more": {**state, "model": {"w": w, "n": n, "extra": torch.zeros(0)}},
        "a nested value": {**state, "rng": {"torch": torch.zeros_like(state["rng"]["torch"])}},
    }
    for what, other in changed.items():
        assert state_digest(other) != digest, what


@pytest.mark.parametrize("where", ["tensor", "value"])
def test_a_checkpoint_changed_after_saving_is_refused(tmp_path, where):
    state = {"format": FORMAT, "model": {"w": torch.ones(4)}, "step": 2}
    state["checksum"] = state_digest(state)
    if where == "tensor":
        state["model"]["w"][1] = 0.0
    else:
        state["step"] = 3
    save_atomic(state, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "ckpt.pt")

"""Backbone states and densessl checkpoints shared by the export tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from densessl.config import ModelConfig, load_config, to_dict
from densessl.models.backbones import backbone_from_config
from densessl.training.checkpoint import FORMAT
from densessl.training.trainer import build_model

ROOT = Path(__file__).resolve().parents[2]

RESNET18 = {"arch": "resnet18", "small_input": False, "width": 1.0}
RESNET50 = {"arch": "resnet50", "small_input": False, "width": 1.0}
VIT_S = {"arch": "vit_small", "patch_size": 16, "img_size": 224, "num_heads": 8}
MOCO_R18 = ["model.arch=resnet18", "model.small_input=false", "model.width=1.0", "method.queue_size=16"]


def state_of(model: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    backbone = backbone_from_config(model)
    for m in backbone.modules():  # non-trivial statistics so a swap of running stats would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return backbone.state_dict()


def densessl_checkpoint(
    path: Path, recipe: str, overrides: list[str], prepare: Callable[[nn.Module], None] | None = None
) -> nn.Module:
    """A training checkpoint of ``recipe`` at ``path``; ``prepare`` edits the method before it is saved."""
    config = load_config(ROOT / "densessl/recipes" / recipe, overrides)
    torch.manual_seed(0)
    method = build_model(config)
    with torch.no_grad():  # make the teacher differ from the student
        for p in method.parameters():
            if not p.requires_grad:
                p.add_(0.01)
        if prepare is not None:
            prepare(method)
    ckpt = {"format": FORMAT, "config": to_dict(config), "model": method.state_dict(), "step": 7, "epoch": 1}
    torch.save(ckpt, path)
    return method

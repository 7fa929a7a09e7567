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


# --- tiny ViTs and the MGC reference layout -------------------------------------------------------

#: a two-block ViT-Ti/8 for 32 px inputs: the smallest network with every ViT tensor name
TINY_VIT = {"arch": "vit_tiny", "patch_size": 8, "img_size": 32, "num_heads": 3, "depth": 2}
#: the quick MoCo-v2 recipe on that ViT
MOCO_VIT = [
    "model.arch=vit_tiny",
    "model.img_size=32",
    "model.patch_size=8",
    "model.num_heads=3",
    "model.depth=2",
    "method.queue_size=16",
]
#: heads of the reference MGC model that are not part of either encoder
MGC_HEAD_KEYS = ("projector_patch.0.weight", "projector_patch_momentum.0.weight", "predictor_patch.0.weight")


def vit_state(seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a :data:`TINY_VIT` drawn with ``seed`` (timm's bare ViT names)."""
    from densessl.models.vit import ViTBackbone

    torch.manual_seed(seed)
    model = {k: v for k, v in TINY_VIT.items() if k != "arch"}
    return ViTBackbone(TINY_VIT["arch"], **model).state_dict()


def mgc_checkpoint(
    path: Path, wrapped: bool = True, ddp: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A reference MGC checkpoint of two :data:`TINY_VIT` encoders at ``path``: the online one
    under ``base_encoder.``, the momentum one under ``momentum_encoder.``, plus head keys; as the
    reference's ``checkpoint0800.pth`` (``{epoch, state_dict, optimizer, scaler}``) when
    ``wrapped``, else the bare state dict; ``ddp`` puts ``module.`` in front of every key.
    Returns (online, momentum) state dicts."""
    online, momentum = vit_state(0), vit_state(1)
    state = {f"base_encoder.{k}": v for k, v in online.items()}
    state |= {f"momentum_encoder.{k}": v for k, v in momentum.items()}
    state |= {key: torch.zeros(4, 192) for key in MGC_HEAD_KEYS}
    if ddp:
        state = {f"module.{k}": v for k, v in state.items()}
    obj = {"epoch": 800, "state_dict": state, "optimizer": {"state": {}}, "scaler": {}} if wrapped else state
    torch.save(obj, path)
    return online, momentum

"""Backbones out of checkpoints: export to torchvision state dicts, and load for evaluation.

An exported file is a plain ``{name: tensor}`` dict with torchvision's ResNet names (no
``fc``), beside a ``<file>.json`` that records the architecture so densessl can rebuild it.
With ``fc`` replaced by ``nn.Identity()``, torchvision's ``resnetXX()`` loads it with
``strict=True`` (:func:`torchvision_reference` builds exactly that model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from densessl.config import ConfigError, ModelConfig, from_dict
from densessl.methods.base import Method
from densessl.models.backbones import ResNetBackbone, build_backbone
from densessl.training.checkpoint import FORMAT, CheckpointError, load_checkpoint


def torchvision_reference(arch: str, small_input: bool = False) -> nn.Module:
    """torchvision's own ResNet with ``fc = Identity`` (and the small-image stem if asked)."""
    model = getattr(torchvision.models, arch)()
    model.fc = nn.Identity()
    if small_input:
        model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def method_from_checkpoint(path: str | Path, ckpt: dict[str, Any] | None = None) -> tuple[Method, Any]:
    """Rebuild the method of a training checkpoint with its weights; returns (method, config).
    ``ckpt``: the already loaded checkpoint, to avoid reading it again."""
    from densessl.training.trainer import build_model

    if ckpt is None:
        ckpt = load_checkpoint(path)
    config = from_dict(ckpt["config"])
    method = build_model(config)
    method.load_state_dict(ckpt["model"])
    return method.eval(), config


def encoder_from_checkpoint(
    path: str | Path, ckpt: dict[str, Any] | None = None
) -> tuple[ResNetBackbone, dict[str, Any]]:
    """Rebuild the method of a training checkpoint and return the backbone it exports
    (``ckpt``: the already loaded checkpoint, to avoid reading it again)."""
    if ckpt is None:
        ckpt = load_checkpoint(path)
    method, config = method_from_checkpoint(path, ckpt)
    info = {
        "method": config.method.name,
        "encoder": method.export_description,
        "step": ckpt["step"],
        "epoch": ckpt["epoch"],
        "model": {
            "arch": config.model.arch,
            "small_input": config.model.small_input,
            "width": config.model.width,
        },
    }
    return method.export_encoder().eval(), info


def export_backbone(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the exported backbone of ``checkpoint`` to ``out`` (+ ``out.json``); verify it first."""
    backbone, info = encoder_from_checkpoint(checkpoint)
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    model = info["model"]
    if model["width"] == 1.0:
        reference = torchvision_reference(model["arch"], model["small_input"])
        result = reference.load_state_dict(state, strict=True)
        if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict raises first
            raise CheckpointError(f"export does not match torchvision: {result}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    info = {**info, "format": "torchvision", "num_tensors": len(state), "source": str(checkpoint)}
    Path(f"{out}.json").write_text(json.dumps(info, indent=2))
    return info


def load_backbone(weights: str | Path, model: ModelConfig | None = None) -> ResNetBackbone:
    """A backbone for evaluation from ``random``, a training checkpoint or an exported file.

    ``random`` needs ``model`` (the architecture). An exported file is rebuilt from its
    ``.json`` sidecar, or from ``model`` when there is none.
    """
    if str(weights) == "random":
        if model is None:
            raise ConfigError("--weights random needs the architecture (--arch ...)")
        return build_backbone(model.arch, small_input=model.small_input, width=model.width).eval()
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return encoder_from_checkpoint(path, obj)[0]
    sidecar = Path(f"{path}.json")
    if sidecar.is_file():
        spec = json.loads(sidecar.read_text())["model"]
        model = ModelConfig(arch=spec["arch"], small_input=spec["small_input"], width=spec["width"])
    if model is None:
        raise CheckpointError(f"{path}: no {sidecar.name} beside it; give the architecture (--arch ...)")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    backbone = build_backbone(model.arch, small_input=model.small_input, width=model.width)
    result = backbone.load_state_dict(obj, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit {model.arch}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return backbone.eval()

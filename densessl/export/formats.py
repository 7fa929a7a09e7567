"""Target formats for exported backbones, and the exact key set each target expects.

A wrong key prefix loads nothing in frameworks that load with ``strict=False`` or by name
heuristics (methods spec 7.2), so every export is checked before it is written: the converted
names must equal the names a reference model of the target's naming holds, no more, no fewer.

=============  ========  ===================================================================
format         backbone  file
=============  ========  ===================================================================
torchvision    ResNet    ``{name: tensor}``, torchvision names without ``fc``
timm           both      ``{name: tensor}``, timm names (ResNet: as torchvision; ViT: bare)
safetensors    both      the same names in a ``.safetensors`` file (architecture in metadata)
detectron2     ResNet    pickle ``{"model": {name: ndarray}, "__author__", "matching_heuristics"}``
                         with ``stem.`` / ``res2..5`` / ``convK.norm`` / ``shortcut`` names
mmdet, mmseg   ResNet    ``{"state_dict": {torchvision names}}`` (mmcv's ``ResNet``)
vit            ViT       bare timm names, as the MGC mmdet/mmseg/mmpose ViT backbones load them
=============  ========  ===================================================================
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from densessl.errors import CheckpointError


def family(model: dict[str, Any]) -> str:
    """``"vit"`` or ``"resnet"`` for an architecture dict."""
    return "vit" if str(model["arch"]).startswith("vit") else "resnet"


def torchvision_reference(arch: str, small_input: bool = False) -> nn.Module:
    """torchvision's own ResNet with ``fc = Identity`` (and the small-image stem if asked)."""
    model = getattr(torchvision.models, arch)()
    model.fc = nn.Identity()
    if small_input:
        model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def timm_reference(model: dict[str, Any]) -> nn.Module:
    """timm's own model for the architecture, without classifier."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    from densessl.models.vit import VIT_ARCHITECTURES

    if family(model) == "vit":
        width, depth, heads = VIT_ARCHITECTURES[model["arch"]]
        return VisionTransformer(
            img_size=model.get("img_size", 224),
            patch_size=model.get("patch_size", 16),
            embed_dim=width,
            depth=model.get("depth") or depth,
            num_heads=model.get("num_heads") or heads,
            qkv_bias=True,
            class_token=True,
            num_classes=0,
        )
    return timm.create_model(model["arch"], pretrained=False, num_classes=0)


def torchvision_keys(model: dict[str, Any]) -> set[str]:
    return set(torchvision_reference(model["arch"]).state_dict())


def timm_keys(model: dict[str, Any]) -> set[str]:
    return set(timm_reference(model).state_dict())


def detectron2_keys(model: dict[str, Any]) -> set[str]:
    """detectron2's ResNet names, laid out from its naming scheme (stem, res2..res5, shortcut)."""
    from densessl.models.backbones import ARCHITECTURES

    block, layers = ARCHITECTURES[model["arch"]]
    convs = 3 if block.expansion == 4 else 2
    norm = ("weight", "bias", "running_mean", "running_var")
    keys = {"stem.conv1.weight", *(f"stem.conv1.norm.{p}" for p in norm)}
    for stage, blocks in enumerate(layers, start=2):
        for i in range(blocks):
            prefix = f"res{stage}.{i}"
            for c in range(1, convs + 1):
                keys.add(f"{prefix}.conv{c}.weight")
                keys.update(f"{prefix}.conv{c}.norm.{p}" for p in norm)
            # the first block of each stage changes width or stride (res2 too, for bottlenecks)
            if i == 0 and (stage > 2 or convs == 3):
                keys.add(f"{prefix}.shortcut.weight")
                keys.update(f"{prefix}.shortcut.norm.{p}" for p in norm)
    return keys


def to_detectron2_name(name: str) -> str:
    """torchvision ResNet name -> detectron2 name (the four rules of methods spec 1.5)."""
    if "layer" not in name:
        name = "stem." + name
    name = re.sub(r"layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", name)
    name = re.sub(r"bn(\d)", r"conv\1.norm", name)
    name = name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return name


def _identity(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state)


def _detectron2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # detectron2's frozen / sync BN keep no batch counter
    return {to_detectron2_name(k): v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _save_torch(state: dict[str, torch.Tensor], path: Path, info: dict[str, Any]) -> None:
    torch.save(state, path)


def _save_mm(state: dict[str, torch.Tensor], path: Path, info: dict[str, Any]) -> None:
    torch.save({"state_dict": state}, path)


def _save_detectron2(state: dict[str, torch.Tensor], path: Path, info: dict[str, Any]) -> None:
    obj = {
        "model": {k: v.numpy() for k, v in state.items()},
        "__author__": "densessl",
        "matching_heuristics": True,
    }
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _save_safetensors(state: dict[str, torch.Tensor], path: Path, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt", "densessl": json.dumps(info)})


@dataclass(frozen=True)
class Format:
    """One export target: which backbones it takes, its names, its expected keys, its file."""

    name: str
    families: tuple[str, ...]
    suffixes: tuple[str, ...]
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    expected_keys: Callable[[dict[str, Any]], set[str]]
    save: Callable[[dict[str, torch.Tensor], Path, dict[str, Any]], None]
    description: str


def _reference_keys(model: dict[str, Any]) -> set[str]:
    return torchvision_keys(model) if family(model) == "resnet" else timm_keys(model)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format(
            "torchvision",
            ("resnet",),
            (".pth", ".pt"),
            _identity,
            torchvision_keys,
            _save_torch,
            "torchvision ResNet state dict (no fc)",
        ),
        Format(
            "timm",
            ("resnet", "vit"),
            (".pth", ".pt", ".bin"),
            _identity,
            timm_keys,
            _save_torch,
            "timm state dict (no classifier)",
        ),
        Format(
            "safetensors",
            ("resnet", "vit"),
            (".safetensors",),
            _identity,
            _reference_keys,
            _save_safetensors,
            "safetensors file with torchvision / timm names",
        ),
        Format(
            "detectron2",
            ("resnet",),
            (".pkl",),
            _detectron2,
            detectron2_keys,
            _save_detectron2,
            "detectron2 pickle (stem / res2-res5 names, numpy arrays)",
        ),
        Format(
            "mmdet",
            ("resnet",),
            (".pth",),
            _identity,
            torchvision_keys,
            _save_mm,
            "mmdetection ResNet checkpoint {'state_dict': ...}",
        ),
        Format(
            "mmseg",
            ("resnet",),
            (".pth",),
            _identity,
            torchvision_keys,
            _save_mm,
            "mmsegmentation ResNet checkpoint {'state_dict': ...}",
        ),
        Format(
            "vit",
            ("vit",),
            (".pth", ".pt"),
            _identity,
            timm_keys,
            _save_torch,
            "bare timm-style ViT state dict (MGC's mmdet / mmseg / mmpose backbones)",
        ),
    ]
}


def default_format(model: dict[str, Any]) -> str:
    return "torchvision" if family(model) == "resnet" else "timm"


def key_mismatch(produced: set[str], expected: set[str], limit: int = 8) -> str | None:
    """A readable account of two key sets' differences, or None when they are equal."""
    if produced == expected:
        return None
    missing, unexpected = sorted(expected - produced), sorted(produced - expected)

    def show(keys: list[str]) -> str:
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more if keys else "none"

    return f"missing {len(missing)}: {show(missing)}; unexpected {len(unexpected)}: {show(unexpected)}"


def convert(state: dict[str, torch.Tensor], model: dict[str, Any], fmt: str) -> dict[str, torch.Tensor]:
    """Rename ``state`` for ``fmt`` and check it against the target's exact key set."""
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    target = FORMATS[fmt]
    kind = family(model)
    if kind not in target.families:
        usable = [f.name for f in FORMATS.values() if kind in f.families]
        raise CheckpointError(
            f"format '{fmt}' takes {'/'.join(target.families)} backbones, not a "
            f"{model['arch']}; for it use one of: {', '.join(usable)}"
        )
    converted = {k: v.detach().cpu().contiguous().clone() for k, v in target.convert(state).items()}
    problem = key_mismatch(set(converted), target.expected_keys(model))
    if problem:
        raise CheckpointError(
            f"the {fmt} export of this {model['arch']} does not match {fmt}'s names: {problem}"
        )
    return converted

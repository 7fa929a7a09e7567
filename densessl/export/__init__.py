"""Backbones out of checkpoints: export to downstream formats, inspect, and load for evaluation.

- :func:`export` reads any checkpoint :mod:`densessl.export.layouts` recognises (densessl's, or
  the MoCo / DenseCL / SlotCon / MGC reference layouts), takes the encoder its method exports
  (or the one asked for), converts it to a target of :mod:`densessl.export.formats`, checks the
  key set and the shapes, and writes the file plus ``<file>.json`` (architecture, source,
  encoder, and the source checkpoint's reproduction ledger when it has one) so densessl can
  rebuild the network later.
- :func:`load_backbone` gives a ready backbone from ``random``, any such checkpoint or export.
- :func:`inspect_checkpoint` says what a checkpoint holds.

A backbone that is not the target's standard network (the quick recipes' small-input stem or a
width other than 1, a ViT at another resolution) exports with the target's names, but the
target's own model (``torchvision.models.resnet18()``, detectron2's R-18...) cannot load it:
:func:`architecture_check` says so, with the construction that does, and the export warns and
records ``"standard_architecture": false`` and ``"load_with"`` in its JSON.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from densessl.config import ConfigError, ModelConfig, from_dict
from densessl.export.formats import FORMATS, convert, default_format, family, torchvision_reference
from densessl.export.layouts import CheckpointContents, read_checkpoint
from densessl.methods.base import Method
from densessl.models.backbones import Backbone, build_backbone
from densessl.training.checkpoint import CheckpointError, load_checkpoint

__all__ = [
    "FORMATS",
    "architecture_check",
    "export",
    "export_backbone",
    "inspect_checkpoint",
    "load_backbone",
    "method_from_checkpoint",
    "read_checkpoint",
    "torchvision_reference",
]


log = logging.getLogger(__name__)

#: (patch size, image size) of timm's named ViTs (``vit_small_patch16_224`` ...)
TIMM_VIT_SIZES = {(16, 224), (8, 224), (32, 224), (16, 384), (32, 384), (14, 518)}
#: ResNet depths built from basic blocks (detectron2 fixes their res2 width at 64)
BASIC_BLOCK_ARCHS = ("resnet18", "resnet34")


def architecture_check(model: dict[str, Any], fmt: str) -> tuple[bool, str | None]:
    """Whether ``model`` is the standard network of format ``fmt`` and, when it is not, the
    construction that loads the exported file: ``(standard, load_with)``."""
    if family(model) == "vit":
        from densessl.models.vit import VIT_ARCHITECTURES

        width, default_depth, heads = VIT_ARCHITECTURES[model["arch"]]
        patch, size = int(model.get("patch_size", 16)), int(model.get("img_size", 224))
        num_heads = model.get("num_heads") or heads
        depth = model.get("depth") or default_depth
        heads_differ = fmt != "vit" and num_heads != heads  # MGC's mm configs state their heads
        if (patch, size) in TIMM_VIT_SIZES and not heads_differ and depth == default_depth:
            return True, None
        return False, (
            f"timm.models.vision_transformer.VisionTransformer(img_size={size}, patch_size={patch}, "
            f"embed_dim={width}, depth={depth}, num_heads={num_heads}, num_classes=0)"
        )
    arch, width = model["arch"], float(model.get("width", 1.0))
    small = bool(model.get("small_input", False))
    if not small and width == 1.0:
        return True, None
    args = (
        [repr(arch)] + (["small_input=True"] if small else []) + ([f"width={width:g}"] if width != 1 else [])
    )
    densessl = f"densessl.models.backbones.ResNetBackbone({', '.join(args)})"
    stem = max(1, round(64 * width))
    if fmt == "torchvision" and width == 1.0:
        return False, (
            f"torchvision.models.{arch}() with model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False), "
            f"model.maxpool = torch.nn.Identity(), model.fc = torch.nn.Identity(); or {densessl}"
        )
    if fmt in ("mmdet", "mmseg") and not small:
        return (
            False,
            f"dict(type='ResNet', depth={arch.removeprefix('resnet')}, "
            f"stem_channels={stem}, base_channels={stem})",
        )
    if fmt == "detectron2":
        if small or arch in BASIC_BLOCK_ARCHS:
            why = (
                "its stem is 7x7 stride 2 with max-pool"
                if small
                else f"its {arch.removeprefix('resnet')}-layer ResNet keeps 64 channels in res2"
            )
            return False, (
                f"export --to torchvision and load that file into {densessl} "
                f"(no detectron2 ResNet config builds it: {why})"
            )
        return False, (
            f"MODEL.RESNETS.DEPTH {arch.removeprefix('resnet')} MODEL.RESNETS.STEM_OUT_CHANNELS {stem} "
            f"MODEL.RESNETS.RES2_OUT_CHANNELS {4 * stem} MODEL.RESNETS.WIDTH_PER_GROUP {stem}"
        )
    if fmt in ("mmdet", "mmseg"):
        return (
            False,
            f"{densessl} (mmcv's ResNet has no stride-1 stem without max-pool), with the file's state_dict",
        )
    return False, densessl


def method_from_checkpoint(path: str | Path, ckpt: dict[str, Any] | None = None) -> tuple[Method, Any]:
    """Rebuild the method of a densessl training checkpoint with its weights: (method, config).
    ``ckpt``: the already loaded checkpoint, to avoid reading it again."""
    from densessl.training.trainer import build_model

    if ckpt is None:
        ckpt = load_checkpoint(path)
    config = from_dict(ckpt["config"])
    method = build_model(config)
    method.load_state_dict(ckpt["model"])
    return method.eval(), config


def model_config(model: dict[str, Any]) -> ModelConfig:
    """A :class:`ModelConfig` from an architecture dict (unknown fields ignored)."""
    fields = set(ModelConfig.__dataclass_fields__)
    return ModelConfig(**{k: v for k, v in model.items() if k in fields and v is not None})


def backbone_for(model: dict[str, Any]) -> Backbone:
    """A freshly initialised densessl backbone of the architecture dict ``model``."""
    if family(model) == "vit":
        from densessl.models.vit import ViTBackbone

        # built here from the dict, so that a depth read off the weights is honoured
        return ViTBackbone(
            model["arch"],
            patch_size=int(model.get("patch_size", 16)),
            img_size=int(model.get("img_size", 224)),
            num_heads=model.get("num_heads"),
            depth=model.get("depth"),
        )
    return build_backbone(**model_config(model).backbone_kwargs())


def build_encoder(state: dict[str, torch.Tensor], model: dict[str, Any], where: str) -> Backbone:
    """The densessl backbone for ``model`` with ``state`` loaded strictly (names and shapes)."""
    try:
        backbone = backbone_for(model)
    except ValueError as exc:  # heads that do not divide the width, an unknown architecture
        raise CheckpointError(f"{where}: {exc}") from None
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{where}: weights do not fit a {model['arch']}: {' '.join(first[:3])}"
        ) from None
    return backbone.eval()


def export(
    checkpoint: str | Path,
    out: str | Path,
    to: str | None = None,
    encoder: str | None = None,
    num_heads: int | None = None,
) -> dict[str, Any]:
    """Convert the exported (or ``encoder``) backbone of ``checkpoint`` to format ``to`` at ``out``.

    Nothing is written unless the converted names equal the target's exact key set and the
    weights load strictly (names and shapes) into the architecture they claim.
    """
    contents = read_checkpoint(checkpoint, num_heads=num_heads)
    role, state = contents.encoder(encoder)
    fmt = to or default_format(contents.model)
    build_encoder(state, contents.model, str(checkpoint))  # shapes and names fit the architecture
    converted = convert(state, contents.model, fmt)
    out = Path(out)
    suffixes = FORMATS[fmt].suffixes
    if out.suffix not in suffixes:
        raise ConfigError(f"--out {out}: a {fmt} file should end in {' or '.join(suffixes)}")
    info = {
        "format": fmt,
        "model": contents.model,
        "encoder": role,
        "method": contents.method,
        "layout": contents.layout,
        "epoch": contents.epoch,
        "step": contents.step,
        "num_tensors": len(converted),
        "source": str(checkpoint),
    }
    if contents.notes.get("ledger"):
        info["ledger"] = contents.notes["ledger"]
    standard, load_with = architecture_check(contents.model, fmt)
    info["standard_architecture"] = standard
    if not standard:
        info["load_with"] = load_with
        log.warning(
            "%s is a %s, not %s's standard %s, so the usual loading code will not fit it; to load it: %s",
            out,
            describe(contents.model),
            fmt,
            contents.model["arch"],
            load_with,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    FORMATS[fmt].save(converted, tmp, info)
    tmp.replace(out)
    Path(f"{out}.json").write_text(json.dumps(info, indent=2))
    return info


def export_backbone(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """The default export: torchvision names for a ResNet, timm names for a ViT."""
    return export(checkpoint, out)


def load_backbone(
    weights: str | Path,
    model: ModelConfig | None = None,
    encoder: str | None = None,
    num_heads: int | None = None,
) -> Backbone:
    """A backbone for evaluation from ``random``, any checkpoint :func:`read_checkpoint` reads,
    or an exported file (rebuilt from its ``.json`` sidecar, else from its weights).

    ``random`` needs ``model`` (the architecture). ``encoder`` picks the role (``query`` or
    ``teacher``) of a file that holds both; ``num_heads`` sets a ViT's attention heads where the
    file does not record them (MGC's default of 8 otherwise, timm's for a bare state dict).
    """
    if str(weights) == "random":
        if model is None:
            raise ConfigError("--weights random needs the architecture (--arch ...)")
        try:
            return build_backbone(**model.backbone_kwargs()).eval()
        except ValueError as exc:  # heads that do not divide a ViT's width, an unknown name
            raise ConfigError(f"--weights random: {exc}") from None
    if not Path(weights).is_file():
        raise CheckpointError(f"weights not found: {weights}")
    contents = read_checkpoint(weights, num_heads=num_heads)
    _, state = contents.encoder(encoder)
    arch = dict(contents.model)
    if model is not None and contents.layout not in ("densessl",):
        given = {"arch": model.arch, "small_input": model.small_input, "width": model.width}
        if family(arch) == "vit" or family(given) == "vit":
            # a ViT's patch and image size are read off the weights: only the name can contradict
            if arch["arch"] != model.arch:
                raise CheckpointError(f"{weights} holds a {describe(arch)}, not the {model.arch} asked for")
        elif any(arch.get(k) != v for k, v in given.items()):
            raise CheckpointError(f"{weights} holds a {describe(arch)}, not the {describe(given)} asked for")
    return build_encoder(state, arch, str(weights))


def describe(model: dict[str, Any]) -> str:
    """'resnet50', 'resnet18 (small input, width 0.25)', 'vit_small/16', 'vit_tiny/8 (depth 2)'."""
    if family(model) == "vit":
        from densessl.models.vit import VIT_ARCHITECTURES

        name = f"{model['arch']}/{model.get('patch_size', 16)}"
        depth, default_depth = model.get("depth"), VIT_ARCHITECTURES[model["arch"]][1]
        return name + (f" (depth {depth})" if depth and depth != default_depth else "")
    extras = [
        e
        for e in (
            "small input" if model.get("small_input") else "",
            f"width {model['width']:g}" if model.get("width", 1) != 1 else "",
        )
        if e
    ]
    return model["arch"] + (f" ({', '.join(extras)})" if extras else "")


def inspect_checkpoint(path: str | Path, num_heads: int | None = None) -> dict[str, Any]:
    """What ``path`` holds: layout, method, progress, config summary, encoders and the export;
    for a ViT also its patch size, image size, depth and heads (``num_heads`` where the file
    does not record them, as for :func:`read_checkpoint`)."""
    contents: CheckpointContents = read_checkpoint(path, num_heads=num_heads)
    report: dict[str, Any] = {
        "path": str(path),
        "layout": contents.layout,
        "method": contents.method,
        "epoch": contents.epoch,
        "step": contents.step,
        "backbone": describe(contents.model),
        "encoders": {
            role: {
                "tensors": len(state),
                "parameters": sum(
                    v.numel()
                    for k, v in state.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                ),
            }
            for role, state in contents.encoders.items()
        },
        "exported_encoder": contents.default_role,
        "formats": [name for name, f in FORMATS.items() if family(contents.model) in f.families],
    }
    if contents.notes.get("ledger"):
        report["ledger"] = contents.notes["ledger"]
    if family(contents.model) == "vit":
        from densessl.models.vit import VIT_ARCHITECTURES

        width, depth, heads = VIT_ARCHITECTURES[contents.model["arch"]]
        report["vit"] = {
            "patch_size": int(contents.model.get("patch_size", 16)),
            "img_size": int(contents.model.get("img_size", 224)),
            "width": width,
            "depth": int(contents.model.get("depth") or depth),
            "num_heads": int(contents.model.get("num_heads") or heads),
            # heads leave no trace in the weights: say when the number is an assumption
            "num_heads_recorded": bool(contents.notes.get("num_heads_recorded")) or num_heads is not None,
        }
    if contents.config is not None:
        cfg = contents.config
        report["config"] = {
            "method": {k: v for k, v in cfg["method"].items() if not isinstance(v, dict | list)},
            "data": cfg["data"]["source"],
            "epochs": cfg["train"]["epochs"],
            "batch_size": cfg["train"]["batch_size"],
            "optimizer": f"{cfg['optim']['name']} lr {cfg['optim']['lr']}",
            "views": [v["crop"]["size"] for v in cfg["views"]],
        }
    if contents.notes.get("args"):
        args = contents.notes["args"]
        report["config"] = {
            k: args[k]
            for k in ("arch", "dataset", "epochs", "batch_size", "base_lr", "num_prototypes")
            if k in args
        }
    return report

"""What every ``densessl eval`` protocol's command shares: the backbone options and the JSON line.

A protocol module's ``add_commands(evals)`` adds its sub-parsers, calls
:func:`add_backbone_arguments` on each and sets ``func``; the handler builds the backbone with
:func:`backbone_from_args` and ends with :func:`emit`, which prints one JSON line.

``--weights`` takes ResNets and ViTs alike, from densessl checkpoints, the reference layouts
(MoCo, DenseCL, SlotCon, MGC's ``base_encoder`` / ``momentum_encoder``) and exports;
``--encoder query|teacher`` picks the network of a checkpoint that holds both. A ViT's dense
map is its patch tokens and its pooled vector their mean (see :mod:`densessl.eval.features`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

#: ``--encoder``: which network of a checkpoint that holds two (the default: the one it exports)
ENCODER_ROLES = ("query", "teacher")


def add_backbone_arguments(
    parser: argparse.ArgumentParser, extra_encoder_choices: tuple[str, ...] = ()
) -> None:
    """``--weights`` (required), ``--encoder``, ``--arch``, ``--small-input``, ``--width``,
    ``--patch-size``, ``--num-heads``, ``--device``, ``--cache-dir``.

    ``extra_encoder_choices``: further values ``--encoder`` accepts (a protocol's former use of
    the name), for the protocol to tell apart from :data:`ENCODER_ROLES`."""
    parser.add_argument(
        "--weights", required=True, help="'random', a checkpoint (densessl or reference layout) or an export"
    )
    parser.add_argument(
        "--encoder",
        default=None,
        choices=(*ENCODER_ROLES, *extra_encoder_choices),
        help="query (trained by gradient) or teacher (its momentum copy), in a checkpoint that holds "
        "both (default: the one the method exports)",
    )
    parser.add_argument("--arch", default=None, help="backbone for --weights random or a bare state dict")
    parser.add_argument(
        "--small-input", action="store_true", help="ResNet: 3x3 stride-1 stem without max-pool"
    )
    parser.add_argument("--width", type=float, default=1.0, help="ResNet: channel multiplier of the backbone")
    parser.add_argument("--patch-size", type=int, default=16, help="ViT: patch size, for --weights random")
    parser.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="ViT: attention heads where the file does not record them (default: MGC's 8 for an MGC "
        "checkpoint, timm's for a bare state dict)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--cache-dir", default=None, help="keep the frozen features here for later runs")


def device_from_args(args: argparse.Namespace) -> str:
    if args.device:
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def backbone_from_args(args: argparse.Namespace, seed: int = 0):
    """The backbone ``--weights`` names; ``seed`` fixes the draw of ``--weights random``, so every
    protocol scores the same random network."""
    import torch

    from densessl.config import ModelConfig
    from densessl.export import load_backbone

    model = None
    if args.arch:
        model = ModelConfig(
            arch=args.arch,
            small_input=args.small_input,
            width=args.width,
            patch_size=args.patch_size,
            num_heads=args.num_heads,
        )
    if str(args.weights) == "random":
        torch.manual_seed(seed)
    return load_backbone(args.weights, model, encoder=role_from_args(args), num_heads=args.num_heads)


def role_from_args(args: argparse.Namespace) -> str | None:
    """The ``--encoder`` role asked for, or None (the checkpoint's default)."""
    role = getattr(args, "encoder", None)
    return role if role in ENCODER_ROLES else None


#: the unit of every score an eval command prints (mIoU, accuracies, AP, J&F)
UNIT = "percent"


def emit(protocol: str, args: argparse.Namespace, figures: dict[str, Any], **extra: Any) -> int:
    """Print ``{"protocol", "weights", "data", "unit", **extra, **figures}`` as one JSON line.

    ``unit`` ("percent") is written so that saved lines say what their numbers mean: the
    segmentation commands printed fractions before, without it.
    """
    record = {
        "protocol": protocol,
        "weights": str(args.weights),
        "data": getattr(args, "data", None),
        "unit": UNIT,
    }
    print(json.dumps({**record, **extra, **figures}))
    return 0

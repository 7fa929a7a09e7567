"""What every ``densessl eval`` protocol's command shares: the backbone options and the JSON line.

A protocol module's ``add_commands(evals)`` adds its sub-parsers, calls
:func:`add_backbone_arguments` on each and sets ``func``; the handler builds the backbone with
:func:`backbone_from_args` and ends with :func:`emit`, which prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights`` (required), ``--arch``, ``--small-input``, ``--width``, ``--device``, ``--cache-dir``."""
    parser.add_argument(
        "--weights", required=True, help="'random', a checkpoint (densessl or reference layout) or an export"
    )
    parser.add_argument("--arch", default=None, help="backbone for --weights random or a bare state dict")
    parser.add_argument("--small-input", action="store_true", help="3x3 stride-1 stem without max-pool")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the backbone")
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

    model = ModelConfig(arch=args.arch, small_input=args.small_input, width=args.width) if args.arch else None
    if str(args.weights) == "random":
        torch.manual_seed(seed)
    return load_backbone(args.weights, model)


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

"""The ``densessl eval seg-finetune`` command: whole-network segmentation fine-tuning (spec 3.6).

:func:`add_commands` adds it to the ``eval`` sub-parsers; its handler prints one JSON line
``{"protocol", "weights", "data", "unit", "preset", "settings", **figures}`` with every score in
percent (see :mod:`densessl.eval.finetune` for the protocol and the figures).

``--data`` takes the segmentation sets of the other dense protocols
(:func:`densessl.eval.segmentation_cli.load_segmentation_data`): ``voc:ROOT`` (devkit layout;
the ``trainaug`` split reads ``SegmentationClassAug``), ``leopart-voc:ROOT``,
``cityscapes:ROOT``, ``ade20k:ROOT``, ``cocostuff:ROOT`` or ``synthetic[:preset]`` (training on
the synthetic ``val`` scenes, scoring on ``test``). ``--preset`` defaults to ``cityscapes`` for
``cityscapes:`` and to ``voc`` otherwise; on the synthetic scenes both sizes default to the
scenes' own, since 512 px is the recipe for photographs.
"""

from __future__ import annotations

import argparse
from typing import Any

from densessl.errors import ConfigError
from densessl.eval.cli_common import add_backbone_arguments, backbone_from_args, device_from_args, emit
from densessl.eval.segmentation_cli import DATA_HELP, load_segmentation_data, to_percent
from densessl.runtime import available_cores

__all__ = ["add_commands", "cmd_seg_finetune"]


def add_commands(evals: argparse._SubParsersAction) -> None:
    """Add ``seg-finetune`` to the ``eval`` sub-parsers."""
    from densessl.eval.finetune import PRESETS

    e = evals.add_parser("seg-finetune", help="fine-tune the whole dilated ResNet with an FCN decoder (mIoU)")
    add_backbone_arguments(e)
    e.add_argument("--data", required=True, help=DATA_HELP)
    e.add_argument(
        "--preset",
        default=None,
        choices=list(PRESETS),
        help="recipe (default: cityscapes for cityscapes: data, voc otherwise)",
    )
    e.add_argument(
        "--train-split", default=None, help="default: the preset's (voc trainaug, cityscapes train)"
    )
    e.add_argument("--val-split", default=None, help="default: val")
    e.add_argument("--epochs", type=int, default=None, help="default: the preset's (voc 45, cityscapes 150)")
    e.add_argument("--lr", type=float, default=None, help="default: voc 0.003 (SGD), cityscapes 1e-4 (Adam)")
    e.add_argument("--batch-size", type=int, default=None, help="default: voc 16, cityscapes 8")
    e.add_argument(
        "--size",
        type=int,
        default=None,
        help="training resize (voc, default 512) or crop (cityscapes, default 768) side; synthetic: its size",
    )
    e.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="evaluation resize side, 0 for each image's own size (default: voc 512, cityscapes 0)",
    )
    e.add_argument(
        "--milestones",
        type=int,
        nargs="*",
        default=None,
        help="step schedule: epochs after which the lr is x0.1 (default: 30 40 of 45, moved with --epochs)",
    )
    e.add_argument("--weight-decay", type=float, default=None)
    e.add_argument("--momentum", type=float, default=None, help="SGD momentum")
    e.add_argument(
        "--dilation", type=int, default=None, help="decoder dilation (default: voc 6, cityscapes 1)"
    )
    e.add_argument("--decoder-channels", type=int, default=None, help="decoder width (default 256)")
    e.add_argument("--runs", type=int, default=1, help="fine-tune N times (seeds seed..seed+N-1) and average")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loading processes (default: 0 on synthetic, else up to 4)",
    )
    e.add_argument(
        "--absent",
        choices=("zero", "nan"),
        default="zero",
        help="IoU of a class never seen (zero: the repository's convention)",
    )
    e.add_argument("--limit-train", type=int, default=0, help="use only the first N training images")
    e.add_argument("--limit-val", type=int, default=0)
    e.add_argument("--synthetic-train", type=int, default=600, help="training images for synthetic data")
    e.add_argument("--synthetic-val", type=int, default=300)
    e.set_defaults(func=cmd_seg_finetune)


def _in_percent(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` in percent: :func:`to_percent` and the figures only this protocol prints."""
    out = to_percent(result)
    for part in ("final", "best_on_val"):
        out[part]["miou_at_size_per_seed"] = [100.0 * v for v in out[part]["miou_at_size_per_seed"]]
    for run in out["history"]:
        for epoch in run:
            epoch["miou_original"] = 100.0 * epoch["miou_original"]
    return out


def cmd_seg_finetune(args: argparse.Namespace) -> int:
    """``eval seg-finetune``: fine-tune and score, ``--runs`` times."""
    from densessl.eval.finetune import is_resnet, resolve_preset, run_finetune

    kind = str(args.data).partition(":")[0]
    preset = args.preset or ("cityscapes" if kind == "cityscapes" else "voc")
    if args.runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {args.runs}")
    synthetic = kind == "synthetic"
    # checked before any data is read: a typo in a size should not wait for the data set
    overrides = dict(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        size=args.size,
        val_size=args.val_size,
        milestones=args.milestones,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        dilation=args.dilation,
        decoder_channels=args.decoder_channels,
        train_split=args.train_split,
        val_split=args.val_split,
    )
    settings = resolve_preset(preset, **overrides)
    data = load_segmentation_data(
        args.data,
        settings.train_split,
        settings.val_split,
        synthetic_train=args.synthetic_train,
        synthetic_val=args.synthetic_val,
        limit_train=args.limit_train,
        limit_val=args.limit_val,
    )
    if synthetic:
        # the recipes' 512 / 768 px are for photographs; the scenes are fine-tuned at their size
        settings = resolve_preset(preset, **{**overrides, "size": args.size or data.image_size})
    backbone = backbone_from_args(args)
    if not is_resnet(backbone):
        raise ConfigError(
            f"seg-finetune fine-tunes ResNets only (it dilates their layer4); {args.weights} holds a "
            f"{type(backbone).__name__}"
        )
    # the scenes are drawn in memory; photographs are decoded and resized on the CPU
    workers = args.workers if args.workers is not None else (0 if synthetic else min(4, available_cores()))
    result = run_finetune(
        backbone,
        data.train,
        data.val,
        data.num_classes,
        settings,
        runs=args.runs,
        seed=args.seed,
        device=device_from_args(args),
        workers=workers,
        absent=args.absent,
    )
    return emit("seg-finetune", args, _in_percent(result), preset=preset, settings=settings.to_dict())

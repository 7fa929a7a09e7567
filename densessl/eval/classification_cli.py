"""``densessl eval svm-voc07 | knn | linear``: image-level protocols on a frozen backbone.

:func:`add_commands` adds the three sub-commands to the sub-parsers of ``densessl eval``; each
parser's ``func`` loads the backbone, runs the protocol of :mod:`densessl.eval.classification`
and prints one JSON line ``{"protocol", "weights", "data", ...figures}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from densessl.errors import ConfigError, DataError
from densessl.eval.cli_common import add_backbone_arguments, backbone_from_args, device_from_args, emit

__all__ = ["add_commands"]


def _common(parser: argparse.ArgumentParser) -> None:
    add_backbone_arguments(parser)
    parser.add_argument("--image-size", type=int, default=224, help="input side in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")


def _folders(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="root with train/ and val/ class-per-folder trees")
    parser.add_argument("--train", default=None, help="class-per-folder training images (instead of --data)")
    parser.add_argument("--val", default=None, help="class-per-folder validation images (instead of --data)")
    parser.add_argument(
        "--centre-crop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="resize the shorter side to image-size*256/224, then centre-crop (default on)",
    )


def add_commands(evals: Any) -> None:
    """Add ``svm-voc07``, ``knn`` and ``linear`` to ``evals`` (the ``densessl eval`` sub-parsers)."""
    # defaults of None mean "the protocol's own default", so that building the parser stays cheap
    e = evals.add_parser("svm-voc07", help="PASCAL VOC07 per-class linear SVMs on pooled features (mAP)")
    e.add_argument("--data", required=True, help="VOC 2007 root (VOC2007, VOCdevkit, or the folder above)")
    _common(e)
    e.add_argument("--variant", choices=("revisited", "openselfsup"), default="revisited")
    e.add_argument("--train-split", default="trainval")
    e.add_argument("--test-split", default="test")
    e.add_argument("--cost", type=float, default=None, help="SVM cost of the revisited variant (default 0.5)")
    e.add_argument(
        "--costs",
        type=float,
        nargs="+",
        default=None,
        help="cost grid of the openselfsup variant (default 1 10 100 and 0.5**4 ... 0.5**19)",
    )
    e.add_argument("--cv-folds", type=int, default=3, help="CV folds of the openselfsup variant")
    e.add_argument("--eleven-point", action="store_true", help="VOC07 11-point AP instead of all-point")
    e.add_argument("--max-iter", type=int, default=2000)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_svm_voc07)

    e = evals.add_parser("knn", help="weighted k-NN on L2-normalised pooled features (top-1/top-5)")
    _folders(e)
    _common(e)
    e.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
    e.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(sim / T) (default 0.07)")
    e.set_defaults(func=cmd_knn)

    e = evals.add_parser("linear", help="logistic regression on cached pooled features (top-1/top-5)")
    _folders(e)
    _common(e)
    e.add_argument(
        "--costs", type=float, nargs="+", default=None, help="C values tried (default 0.01 0.1 1 10 100)"
    )
    e.add_argument("--holdout", type=float, default=0.2, help="training fraction held out to pick C")
    e.add_argument("--max-iter", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_linear)


def _common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    return {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "device": device_from_args(args),
        "cache_dir": args.cache_dir,
    }


def _given(**options: Any) -> dict[str, Any]:
    """The options the user set (the others keep the protocol's defaults)."""
    return {key: value for key, value in options.items() if value is not None}


def cmd_svm_voc07(args: argparse.Namespace) -> int:
    from densessl.data.classification import VOC07Classification
    from densessl.eval.classification import run_svm_voc07

    kwargs = _common_kwargs(args)
    train = VOC07Classification(args.data, args.train_split)
    test = VOC07Classification(args.data, args.test_split)
    result = run_svm_voc07(
        backbone_from_args(args),
        train,
        test,
        args.variant,
        **_given(cost=args.cost, costs=args.costs),
        cv_folds=args.cv_folds,
        eleven_point=args.eleven_point,
        max_iter=args.max_iter,
        seed=args.seed,
        **kwargs,
    )
    return emit("svm-voc07", args, result, train_split=args.train_split, test_split=args.test_split)


def _image_folders(args: argparse.Namespace):
    from densessl.data.classification import ImageFolderClassification

    train, val = args.train, args.val
    if args.data is not None:
        train = train or str(Path(args.data) / "train")
        val = val or str(Path(args.data) / "val")
    if train is None or val is None:
        raise ConfigError("give --data ROOT (with train/ and val/) or both --train DIR and --val DIR")
    for name, folder in (("training", train), ("validation", val)):
        if not Path(folder).is_dir():
            raise DataError(f"{name} image folder {folder} does not exist or is not a directory")
    return ImageFolderClassification(train), ImageFolderClassification(val), train, val


def cmd_knn(args: argparse.Namespace) -> int:
    from densessl.eval.classification import run_knn

    kwargs = _common_kwargs(args)
    train, val, train_dir, val_dir = _image_folders(args)
    result = run_knn(
        backbone_from_args(args),
        train,
        val,
        k=args.k,
        temperature=args.temperature,
        centre_crop=args.centre_crop,
        **kwargs,
    )
    return emit("knn", args, result, train=train_dir, val=val_dir)


def cmd_linear(args: argparse.Namespace) -> int:
    from densessl.eval.classification import run_linear

    kwargs = _common_kwargs(args)
    train, val, train_dir, val_dir = _image_folders(args)
    result = run_linear(
        backbone_from_args(args),
        train,
        val,
        **_given(costs=args.costs),
        holdout=args.holdout,
        max_iter=args.max_iter,
        seed=args.seed,
        centre_crop=args.centre_crop,
        **kwargs,
    )
    return emit("linear", args, result, train=train_dir, val=val_dir)

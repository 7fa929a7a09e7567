"""The ``densessl eval`` segmentation commands: ``seg-probe``, ``seg-nn`` and ``seg-cluster``.

:func:`add_commands` adds them to the ``eval`` sub-parsers; each sets ``func`` to a handler
``(args) -> int`` that prints one JSON line ``{"protocol", "weights", "data", **figures}``.
Scores are printed in percent, like every other ``densessl eval`` command: the protocol
functions return fractions in [0, 1] (their callers, such as the demo, rely on that), and
:func:`to_percent` scales them here, at the command line.

``--data`` takes ``voc:ROOT`` (VOC 2012 devkit layout; split ``aug``/``trainaug`` reads
``SegmentationClassAug``), ``leopart-voc:ROOT`` (the pre-cut layout with ``sets/``),
``ade20k:ROOT``, ``cityscapes:ROOT``, ``cocostuff:ROOT`` (mmseg COCO-Stuff164k) or
``synthetic[:preset]`` (probe training on the synthetic ``val`` scenes, scoring on ``test``).
Real photographs are resized to 448 x 448 by default, the synthetic scenes kept at their size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from densessl.errors import DataError
from densessl.eval.cli_common import add_backbone_arguments, backbone_from_args, device_from_args, emit

__all__ = [
    "FRACTION_KEYS",
    "SegmentationData",
    "add_commands",
    "cmd_seg_cluster",
    "cmd_seg_nn",
    "cmd_seg_probe",
    "load_segmentation_data",
    "to_percent",
]

#: keys whose values (numbers, or lists of them) the segmentation protocols give as fractions
FRACTION_KEYS = frozenset(
    {
        "miou",
        "miou_std",
        "miou_per_seed",
        "miou_subset",
        "iou_per_class",
        "pixel_acc",
        "pixel_acc_std",
        "pixel_acc_per_seed",
        "mean_acc",
        "acc_per_class",
        "fwiou",
    }
)


def to_percent(result: Any) -> Any:
    """A copy of ``result`` with the values of :data:`FRACTION_KEYS` in percent, at any depth
    (``clusterings`` is a list of dicts, ``retrieval`` a dict); None and NaN stay as they are."""
    if isinstance(result, list):
        return [to_percent(item) for item in result]
    if not isinstance(result, dict):
        return result
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key in FRACTION_KEYS:
            out[key] = _scaled(value)
        else:
            out[key] = to_percent(value)
    return out


def _scaled(value: Any) -> Any:
    if isinstance(value, list):
        return [_scaled(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return 100.0 * value


DATA_HELP = "leopart-voc:ROOT, ade20k:ROOT, cityscapes:ROOT, cocostuff:ROOT, voc:ROOT or synthetic[:preset]"
REAL_IMAGE_SIZE = 448


class _View:
    """The first ``length`` items of a data set, with names for the feature cache key."""

    def __init__(self, data: Any, length: int, prefix: str | None = None) -> None:
        self.data = data
        self.length = min(int(length), len(data)) if length else len(data)
        self.prefix = prefix
        self.num_classes = data.num_classes
        self.class_names = list(getattr(data, "class_names", []))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        return self.data[index]

    def describe(self, index: int) -> str:
        if self.prefix is None:
            return self.data.describe(index)
        return f"{self.prefix}:{index}"


@dataclass
class SegmentationData:
    """A train/val pair of segmentation sets and what the protocols need to know about them."""

    train: Any
    val: Any
    num_classes: int
    image_size: int
    class_names: list[str]
    #: index of a background class, or None when every class is a real one (ADE20K, Cityscapes, ...)
    background: int | None


def load_segmentation_data(
    spec: str,
    train_split: str = "train",
    val_split: str = "val",
    *,
    synthetic_train: int = 600,
    synthetic_val: int = 300,
    limit_train: int = 0,
    limit_val: int = 0,
) -> SegmentationData:
    """The data sets ``--data spec`` names (see the module docstring)."""
    from densessl.data import segsets

    kind, _, root = spec.partition(":")
    readers = {
        "voc": (segsets.voc_segmentation, 0),
        "leopart-voc": (segsets.LeopartVOC, 0),
        "ade20k": (segsets.ADE20K, None),
        "cityscapes": (segsets.Cityscapes, None),
        "cocostuff": (segsets.COCOStuff, None),
    }
    if kind == "synthetic":
        from densessl.data.synthetic import SyntheticScenes, resolve_config

        try:
            scenes = resolve_config(root or None)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        digest = hashlib.sha1(json.dumps(scenes.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        train = _View(SyntheticScenes(scenes, "val", synthetic_train), limit_train, f"synthetic-{digest}-val")
        val = _View(SyntheticScenes(scenes, "test", synthetic_val), limit_val, f"synthetic-{digest}-test")
        return SegmentationData(train, val, train.num_classes, scenes.image_size, train.class_names, 0)
    if kind not in readers or not root:
        raise DataError(f"--data {spec!r}: expected {DATA_HELP}")
    reader, background = readers[kind]
    train = _View(reader(root, train_split), limit_train)
    val = _View(reader(root, val_split), limit_val)
    return SegmentationData(train, val, train.num_classes, REAL_IMAGE_SIZE, train.class_names, background)


# ----------------------------------------------------------------------------------------------
# parsers
# ----------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    add_backbone_arguments(parser)
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument(
        "--image-size", type=int, default=None, help="input resolution (real sets 448, synthetic 64)"
    )
    parser.add_argument("--limit-train", type=int, default=0, help="use only the first N training images")
    parser.add_argument("--limit-val", type=int, default=0)
    parser.add_argument("--synthetic-train", type=int, default=600, help="training images for synthetic data")
    parser.add_argument("--synthetic-val", type=int, default=300)
    parser.add_argument("--absent", choices=("zero", "nan"), default="zero", help="IoU of a class never seen")
    parser.add_argument("--extract-batch-size", type=int, default=64)


def add_commands(evals: argparse._SubParsersAction) -> None:
    """Add ``seg-probe``, ``seg-nn`` and ``seg-cluster`` to the ``eval`` sub-parsers."""
    from densessl.eval.segmentation import PRESETS

    e = evals.add_parser("seg-probe", help="frozen dense linear or FCN probe (mIoU)")
    _common(e)
    e.add_argument("--preset", default="default", choices=list(PRESETS), help="recipe (leopart: spec A1.1)")
    e.add_argument(
        "--head", choices=("linear", "fcn"), default=None, help="probe head (default: the preset's)"
    )
    e.add_argument("--train-resolution", type=int, default=None, help="mask size while training the probe")
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--lr", type=float, default=None)
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--seeds", type=int, nargs="+", default=None)
    e.add_argument("--fcn-channels", type=int, default=None, help="width of the FCN head")
    e.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="standardise features per channel before the head (default: the preset's)",
    )
    e.set_defaults(func=cmd_seg_probe)

    e = evals.add_parser("seg-nn", help="dense nearest-neighbour retrieval mIoU (Hummingbird)")
    _common(e)
    e.add_argument("--k", type=int, default=30, help="neighbours per patch")
    e.add_argument("--temperature", type=float, default=0.02, help="softmax temperature on cosine similarity")
    e.add_argument(
        "--patches-per-image", type=int, default=None, help="memory patches per image (default all)"
    )
    e.add_argument(
        "--void",
        choices=("zero", "skip"),
        default=None,
        help="void pixels in the memory: class 0 (with a background class, the default) or left out",
    )
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_seg_nn)

    e = evals.add_parser("seg-cluster", help="k-means (over)clustering mIoU and segment retrieval")
    _common(e)
    e.add_argument("--clusters", type=int, nargs="+", default=None, help="K values (default: classes and 4x)")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    e.add_argument("--matching", choices=("auto", "hungarian", "many-to-one"), default="auto")
    e.add_argument("--pca-dim", type=int, default=50)
    e.add_argument("--n-init", type=int, default=5, help="k-means restarts per seed")
    e.add_argument("--max-iter", type=int, default=100)
    e.add_argument("--minibatch", action="store_true", help="MiniBatchKMeans, for millions of patches")
    e.add_argument("--eval-resolution", type=int, default=None, help="default min(image size, 100)")
    e.add_argument(
        "--retrieval", action=argparse.BooleanOptionalAction, default=True, help="also run segment retrieval"
    )
    e.add_argument(
        "--regions",
        choices=("foreground", "classes"),
        default=None,
        help="oracle regions for retrieval (default: foreground with a background class, else classes)",
    )
    e.set_defaults(func=cmd_seg_cluster)


# ----------------------------------------------------------------------------------------------
# handlers
# ----------------------------------------------------------------------------------------------


def _prepare(args: argparse.Namespace):
    backbone = backbone_from_args(args)
    data = load_segmentation_data(
        args.data,
        args.train_split,
        args.val_split,
        synthetic_train=args.synthetic_train,
        synthetic_val=args.synthetic_val,
        limit_train=args.limit_train,
        limit_val=args.limit_val,
    )
    return backbone, data, device_from_args(args)


def _arch_of(backbone: Any, arch: str | None) -> str | None:
    return "vit" if type(backbone).__name__.lower().startswith("vit") else arch


def cmd_seg_probe(args: argparse.Namespace) -> int:
    """``eval seg-probe``: the frozen linear (or FCN) probe."""
    from densessl.eval.segmentation import resolve_preset, run_probe

    backbone, data, device = _prepare(args)
    s = resolve_preset(
        args.preset,
        arch=_arch_of(backbone, args.arch),
        dataset_image_size=data.image_size,
        image_size=args.image_size,
        train_resolution=args.train_resolution,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seeds=args.seeds,
        head=args.head,
        fcn_channels=args.fcn_channels,
        standardize=args.standardize,
    )
    result = run_probe(
        backbone,
        data.train,
        data.val,
        data.num_classes,
        head=s["head"],
        image_size=s["image_size"],
        seeds=s["seeds"],
        epochs=s["epochs"],
        lr=s["lr"],
        batch_size=s["batch_size"],
        train_resolution=s["train_resolution"],
        device=device,
        weight_decay=s["weight_decay"],
        momentum=s["momentum"],
        milestones=s["milestones"],
        standardize=s["standardize"],
        absent=args.absent,
        extract_batch_size=args.extract_batch_size,
        fcn_channels=s["fcn_channels"],
        dropout=s["dropout"],
        cache_dir=args.cache_dir,
    )
    result.update({"preset": args.preset, "epochs": s["epochs"], "lr": s["lr"]})
    return emit("seg-probe", args, to_percent(result))


def cmd_seg_nn(args: argparse.Namespace) -> int:
    """``eval seg-nn``: Hummingbird-style dense nearest-neighbour retrieval."""
    from densessl.eval.retrieval import run_nn_retrieval

    backbone, data, device = _prepare(args)
    void = args.void or ("zero" if data.background == 0 else "skip")
    result = run_nn_retrieval(
        backbone,
        data.train,
        data.val,
        data.num_classes,
        image_size=args.image_size or data.image_size,
        k=args.k,
        temperature=args.temperature,
        patches_per_image=args.patches_per_image,
        void=void,
        absent=args.absent,
        seed=args.seed,
        device=device,
        extract_batch_size=args.extract_batch_size,
        cache_dir=args.cache_dir,
    )
    return emit("seg-nn", args, to_percent(result))


def cmd_seg_cluster(args: argparse.Namespace) -> int:
    """``eval seg-cluster``: k-means clustering with matching, and segment retrieval."""
    import time

    from densessl.data.voc import VOC_CLASSES
    from densessl.eval.clustering import VOC_SEVEN, run_clustering, segment_retrieval
    from densessl.eval.features import extract

    t0 = time.perf_counter()
    backbone, data, device = _prepare(args)
    image_size = args.image_size or data.image_size
    kwargs = dict(batch_size=args.extract_batch_size, device=device, cache_dir=args.cache_dir)
    val = extract(backbone, data.val, image_size, **kwargs)
    result: dict[str, Any] = {"num_classes": data.num_classes, "image_size": image_size}
    clustering = run_clustering(
        val.dense,
        val.masks,
        data.num_classes,
        clusters=args.clusters,
        seeds=args.seeds,
        pca_dim=args.pca_dim,
        n_init=args.n_init,
        max_iter=args.max_iter,
        minibatch=args.minibatch,
        matching=args.matching,
        eval_resolution=args.eval_resolution or min(image_size, 100),
        absent=args.absent,
    )
    head = clustering["clusterings"][0]
    result.update({"miou": head["miou"], "pixel_acc": head["pixel_acc"], "k": head["k"]})
    result.update({k: v for k, v in clustering.items() if k != "seconds"})
    if args.retrieval:
        train = extract(backbone, data.train, image_size, **kwargs)
        regions = args.regions or ("foreground" if data.background is not None else "classes")
        if regions == "foreground" and data.background is None:
            raise DataError(f"--regions foreground needs a background class, which {args.data} does not have")
        subset = VOC_SEVEN if tuple(data.class_names) == VOC_CLASSES else None
        retrieval = segment_retrieval(
            train.dense,
            train.masks,
            val.dense,
            val.masks,
            data.num_classes,
            regions=regions,
            background=data.background or 0,
            subset=subset,
            absent=args.absent,
        )
        retrieval.pop("seconds")
        result["retrieval"] = retrieval
    result["num_train"] = len(data.train) if args.retrieval else 0
    result["num_val"] = len(data.val)
    result["seconds"] = time.perf_counter() - t0
    return emit("seg-cluster", args, to_percent(result))

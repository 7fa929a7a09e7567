"""The ``densessl`` command line.

Every failure a user can cause (a missing file, a bad config key, an unreadable dataset) ends
with one line on stderr and a non-zero exit status, not a traceback. Evaluation commands end by
printing one JSON line with their figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from densessl.config import ConfigError, ModelConfig, load_config
from densessl.data.base import DataError
from densessl.training.checkpoint import CheckpointError

USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError)
FORMAT_NAMES = ("torchvision", "timm", "safetensors", "detectron2", "mmdet", "mmseg", "vit")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default=None, help="backbone for --weights random or a bare state dict")
    parser.add_argument("--small-input", action="store_true", help="3x3 stride-1 stem without max-pool")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the backbone")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densessl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pre-train a backbone from a YAML recipe")
    p.add_argument("config", help="YAML recipe, e.g. configs/densecl/coco_r50_800ep.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=100")
    p.add_argument("--out", default=None, help="run directory (default runs/<recipe name>)")
    p.add_argument("--resume", default=None, help="'auto' (the run directory's last checkpoint) or a path")

    p = sub.add_parser("demo", help="pre-train on the synthetic scenes, then probe against random init")
    p.add_argument("--method", default="densecl")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("overrides", nargs="*", help="overrides of the quick recipe")

    p = sub.add_parser("export", help="convert a checkpoint's backbone for a downstream framework")
    p.add_argument("checkpoint", help="densessl checkpoint, or a MoCo / DenseCL / SlotCon / MGC one")
    p.add_argument("--out", required=True, help="output file, e.g. backbone.pth, backbone.pkl")
    p.add_argument(
        "--to",
        default=None,
        choices=list(FORMAT_NAMES),
        help="target format (default: torchvision for a ResNet, timm for a ViT)",
    )
    p.add_argument("--encoder", default=None, help="query or teacher (default: the one the method exports)")
    p.add_argument(
        "--num-heads", type=int, default=None, help="ViT attention heads, if the file does not say"
    )

    p = sub.add_parser("inspect", help="say what a checkpoint holds")
    p.add_argument("checkpoint")

    p = sub.add_parser("eval", help="evaluate a backbone")
    evals = p.add_subparsers(dest="protocol", required=True)
    e = evals.add_parser("seg-probe", help="frozen dense linear probe (mIoU)")
    e.add_argument("--weights", required=True, help="'random', a training checkpoint or an exported backbone")
    e.add_argument("--data", required=True, help="voc:ROOT (VOC 2012 layout) or synthetic[:preset]")
    _add_model_args(e)
    e.add_argument("--train-split", default="train")
    e.add_argument("--val-split", default="val")
    e.add_argument("--image-size", type=int, default=None, help="probe resolution (VOC 448, synthetic 64)")
    e.add_argument("--train-resolution", type=int, default=None, help="mask size while training the probe")
    e.add_argument("--epochs", type=int, default=25)
    e.add_argument("--lr", type=float, default=0.1)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--limit-train", type=int, default=0, help="use only the first N training images")
    e.add_argument("--limit-val", type=int, default=0)
    e.add_argument("--synthetic-train", type=int, default=600, help="probe images for synthetic data")
    e.add_argument("--synthetic-val", type=int, default=300)
    e.add_argument("--device", default=None)

    p = sub.add_parser("viz", help="pictures of what a model learned")
    viz = p.add_subparsers(dest="picture", required=True)
    v = viz.add_parser("prototypes", help="top images of learned prototypes, their pixels tinted (PNG)")
    v.add_argument("checkpoint", help="training checkpoint of a method with prototypes (SlotCon)")
    v.add_argument("--data", required=True, help="image folder, folder:DIR, coco:ROOT or synthetic[:preset]")
    v.add_argument("--topk", type=int, default=5, help="images per prototype")
    v.add_argument("--sampling", type=int, default=20, help="prototypes shown, drawn at random (0: all used)")
    v.add_argument("--out", default="protos.png")
    v.add_argument("--size", type=int, default=None, help="centre crop (default: the pre-training crop)")
    v.add_argument("--resize", type=int, default=None, help="short side before the crop (default size*8/7)")
    v.add_argument("--limit", type=int, default=0, help="use only the first N images (synthetic: 300)")
    v.add_argument("--tile", type=int, default=112, help="pixels per picture in the grid")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--batch-size", type=int, default=64)
    v.add_argument("--device", default=None)

    p = sub.add_parser("data", help="datasets")
    data = p.add_subparsers(dest="action", required=True)
    d = data.add_parser("synth", help="write the synthetic scenes in the PASCAL VOC 2012 layout")
    d.add_argument("--out", required=True)
    d.add_argument("--preset", default=None)
    d.add_argument("--train", type=int, default=1000)
    d.add_argument("--val", type=int, default=300)
    return parser


def cmd_pretrain(args: argparse.Namespace) -> int:
    from densessl import distributed as dist
    from densessl.training.trainer import Trainer

    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    summary = Trainer(config, out, resume=args.resume).fit()
    if dist.is_main_process():
        print(json.dumps({"run_dir": str(out), **summary}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from densessl.demo import format_table, run_demo

    summary = run_demo(args.out, method=args.method, overrides=args.overrides)
    print(format_table(summary))
    print(f"summary written to {Path(args.out) / 'summary.json'}")
    print(
        json.dumps(
            {
                "gain_miou": summary["gain_miou"],
                **{r["method"]: round(r["miou"], 2) for r in summary["results"]},
            }
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from densessl.export import export

    info = export(args.checkpoint, args.out, to=args.to, encoder=args.encoder, num_heads=args.num_heads)
    print(json.dumps({"out": args.out, **info}))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from densessl.export import inspect_checkpoint

    report = inspect_checkpoint(args.checkpoint)
    print(
        f"{report['path']}: {report['layout']} checkpoint"
        + (f" of {report['method']}" if report["method"] else "")
    )
    if report["epoch"] is not None or report["step"] is not None:
        print(f"  progress: epoch {report['epoch']}, step {report['step']}")
    print(f"  backbone: {report['backbone']}")
    for key, value in report.get("config", {}).items():
        print(f"  {key}: {value}")
    for role, counts in report["encoders"].items():
        mark = "  <- exported" if role == report["exported_encoder"] else ""
        print(f"  encoder '{role}': {counts['parameters']:,} parameters in {counts['tensors']} tensors{mark}")
    print(f"  export formats: {', '.join(report['formats'])}")
    print(json.dumps(report))
    return 0


def _probe_datasets(args: argparse.Namespace):
    spec = args.data
    if spec.startswith("voc:"):
        from densessl.data.voc import VOCSegmentation

        train = VOCSegmentation(spec[4:], args.train_split)
        val = VOCSegmentation(spec[4:], args.val_split)
        return train, val, train.num_classes, args.image_size or 448
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from densessl.data.synthetic import SyntheticScenes, resolve_config

        scenes = resolve_config(spec.split(":", 1)[1] if ":" in spec else None)
        train = SyntheticScenes(scenes, "val", args.synthetic_train)
        val = SyntheticScenes(scenes, "test", args.synthetic_val)
        return train, val, scenes.num_classes + 1, args.image_size or scenes.image_size
    raise DataError(f"--data {spec!r}: expected voc:ROOT or synthetic[:preset]")


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from densessl.eval.segmentation import run_linear_probe
    from densessl.export import load_backbone

    model = ModelConfig(arch=args.arch, small_input=args.small_input, width=args.width) if args.arch else None
    backbone = load_backbone(args.weights, model)
    train, val, num_classes, image_size = _probe_datasets(args)
    if args.limit_train:
        train = [train[i] for i in range(min(args.limit_train, len(train)))]
    if args.limit_val:
        val = [val[i] for i in range(min(args.limit_val, len(val)))]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = run_linear_probe(
        backbone,
        train,
        val,
        num_classes,
        image_size=image_size,
        seeds=tuple(args.seeds),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        train_resolution=args.train_resolution or max(image_size // 2, 8),
        device=device,
    )
    print(json.dumps({"protocol": "seg-probe", "weights": str(args.weights), "data": args.data, **result}))
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    import torch

    from densessl.export import method_from_checkpoint
    from densessl.viz.prototypes import default_sizes, load_images, prototype_source, visualise_prototypes

    method, config = method_from_checkpoint(args.checkpoint)
    if not method.has_prototypes:
        raise ConfigError(f"{args.checkpoint}: method '{method.name}' has no prototypes to visualise")
    size, resize = default_sizes(config, args.size, args.resize)
    data = load_images(prototype_source(args.data, args.limit), size, resize, args.limit)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    summary = visualise_prototypes(
        method, data, args.out, args.topk, args.sampling, args.seed, args.tile, args.batch_size, device
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "prototypes"}))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from densessl.data.synthetic import resolve_config, write_voc

    root = write_voc(args.out, resolve_config(args.preset), args.train, args.val)
    print(json.dumps({"voc_root": str(root), "train": args.train, "val": args.val}))
    return 0


COMMANDS = {
    "pretrain": cmd_pretrain,
    "demo": cmd_demo,
    "export": cmd_export,
    "inspect": cmd_inspect,
    "eval": cmd_eval,
    "viz": cmd_viz,
    "data": cmd_data,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from densessl.training.trainer import TrainingError

    try:
        return COMMANDS[args.command](args)
    except (*USER_ERRORS, TrainingError) as exc:
        print(f"densessl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("densessl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

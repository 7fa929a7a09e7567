"""The ``densessl`` command line.

Every failure a user can cause (a missing file, a bad config key, an unreadable dataset) ends
with one line on stderr and a non-zero exit status, not a traceback. Evaluation commands end by
printing one JSON line with their figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from pathlib import Path

from densessl.config import ConfigError, load_config
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
    p.add_argument(
        "--out", default=None, help="run directory (default runs/demo, runs/demo-<method> for others)"
    )
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

    p = sub.add_parser("eval", help="evaluate a backbone (each protocol ends with one JSON line)")
    evals = p.add_subparsers(dest="protocol", required=True)
    from densessl.eval import classification_cli, segmentation_cli, video_cli

    for module in (segmentation_cli, classification_cli, video_cli):
        module.add_commands(evals)
    for parser_ in evals.choices.values():
        parser_.add_argument(
            "--save", default=None, metavar="RUN_DIR", help="also append the result to RUN_DIR/eval.jsonl"
        )
    r = evals.add_parser("report", help="one Markdown table and one PNG chart from several runs' results")
    r.add_argument(
        "runs", nargs="+", help="run directories (with eval.jsonl from --save, or a demo's summary.json)"
    )
    r.add_argument("--out", default="report", help="writes OUT.md and OUT.png")
    r.set_defaults(func=cmd_report)

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
    d = data.add_parser("synth-voc07", help="write synthetic scenes in the VOC 2007 classification layout")
    d.add_argument("--out", required=True)
    d.add_argument("--preset", default=None)
    d.add_argument("--trainval", type=int, default=600)
    d.add_argument("--test", type=int, default=300)
    d = data.add_parser("synth-folders", help="write synthetic scenes as train/ and val/ class folders")
    d.add_argument("--out", required=True)
    d.add_argument("--preset", default=None)
    d.add_argument("--train", type=int, default=600)
    d.add_argument("--val", type=int, default=300)
    d = data.add_parser(
        "synth-davis", help="write clips of moving synthetic objects in the DAVIS-2017 layout"
    )
    d.add_argument("--out", required=True)
    d.add_argument("--preset", default=None)
    d.add_argument("--sequences", type=int, default=8)
    d.add_argument("--frames", type=int, default=12)
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

    out = args.out or ("runs/demo" if args.method == "densecl" else f"runs/demo-{args.method}")
    summary = run_demo(out, method=args.method, overrides=args.overrides)
    print(format_table(summary))
    print(f"summary written to {Path(out) / 'summary.json'}")
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


def cmd_eval(args: argparse.Namespace) -> int:
    if args.protocol == "report" or not args.save:
        return args.func(args)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = args.func(args)
    printed = buffer.getvalue()
    sys.stdout.write(printed)
    lines = [line for line in printed.splitlines() if line.startswith("{")]
    if code == 0 and lines:
        run = Path(args.save)
        run.mkdir(parents=True, exist_ok=True)
        with open(run / "eval.jsonl", "a") as f:
            f.write(lines[-1] + "\n")
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from densessl.eval.report import bar_chart, collect, markdown_table

    table = collect(args.runs)
    text = markdown_table(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.md").write_text(text + "\n")
    chart = bar_chart(table, f"{out}.png")
    print(text)
    print(json.dumps({"table": f"{out}.md", "chart": str(chart), "runs": table}))
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
    if args.action == "synth-voc07":
        from densessl.data.synthetic_sets import write_synthetic_voc07

        root = write_synthetic_voc07(args.out, args.preset, args.trainval, args.test)
        print(json.dumps({"voc07_root": str(root), "trainval": args.trainval, "test": args.test}))
        return 0
    if args.action == "synth-folders":
        from densessl.data.synthetic_sets import write_synthetic_folders

        root = write_synthetic_folders(args.out, args.preset, args.train, args.val)
        print(json.dumps({"root": str(root), "train": args.train, "val": args.val}))
        return 0
    if args.action == "synth-davis":
        from densessl.data.synthetic_clips import write_synthetic_davis

        root = write_synthetic_davis(args.out, args.preset, args.sequences, args.frames)
        print(json.dumps({"davis_root": str(root), "sequences": args.sequences, "frames": args.frames}))
        return 0
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

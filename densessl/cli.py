"""The ``densessl`` command line.

Every failure a user can cause (a missing file, a bad config key, an unreadable dataset) ends
with one line on stderr and a non-zero exit status, not a traceback. Evaluation commands end by
printing one JSON line with their figures; ``pretrain`` ends with a few human lines on stderr
(steps, time, final loss, checkpoint, what to run next) and its JSON line on stdout.

``key.sub=value`` overrides may stand anywhere on the line, ``-v`` / ``-q`` before or after any
sub-command, and ``--help`` shows every default.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from densessl import __version__
from densessl.compare import PROTOCOLS as COMPARE_PROTOCOLS
from densessl.compare import CompareSettings
from densessl.config import config_yaml, did_you_mean, load_config
from densessl.errors import ConfigError, DensesslError
from densessl.recipes import quick_methods
from densessl.runtime import launched_world_size

log = logging.getLogger("densessl.cli")

#: errors printed as one line instead of a traceback
USER_ERRORS = (DensesslError, FileNotFoundError)
FORMAT_NAMES = ("torchvision", "timm", "safetensors", "detectron2", "mmdet", "mmseg", "vit")
#: third-party loggers whose debug lines drown densessl's under -v (PIL logs every PNG chunk)
NOISY_LOGGERS = ("PIL", "matplotlib", "urllib3", "fsspec", "filelock", "h5py", "asyncio", "git")
#: pre-training methods with size-aware defaults (``pretrain --method M --data D`` without a recipe)
AUTO_METHODS = ("densecl", "mocov2", "slotcon")


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, except where there is nothing to show (None, a flag)."""

    @staticmethod
    def shows_default(action: argparse.Action) -> bool:
        """Whether ``action``'s default says something (not None, not an unset flag)."""
        default = action.default
        return not (
            default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or (not action.option_strings and action.nargs not in ("?", "*"))
        )

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or not self.shows_default(action):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with defaults in ``--help`` and "did you mean" for a misspelt choice or sub-command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            raise argparse.ArgumentError(
                action,
                f"invalid choice: {value!r}{did_you_mean(value, names)} (choose from {', '.join(names)})",
            )


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a sub-command's unset flag must not reset one given before the sub-command
    parser.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="debug lines of densessl"
    )
    parser.add_argument(
        "-q", "--quiet", action="count", default=argparse.SUPPRESS, help="warnings and errors only"
    )


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_all_parsers(sub))
    return found


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default=None, help="backbone for --weights random or a bare state dict")
    parser.add_argument("--small-input", action="store_true", help="3x3 stride-1 stem without max-pool")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the backbone")


def _add_picture_args(
    parser: argparse.ArgumentParser, out: str, size_default: str, limit: int, limit_help: str
) -> None:
    """The options every ``viz`` picture shares: data, output, crop, grid."""
    parser.add_argument(
        "--data", required=True, help="image folder, folder:DIR, coco:ROOT or synthetic[:preset]"
    )
    parser.add_argument("--out", default=out)
    parser.add_argument("--size", type=int, default=None, help=f"centre crop (default: {size_default})")
    parser.add_argument(
        "--resize", type=int, default=None, help="short side before the crop (default size*8/7)"
    )
    parser.add_argument("--limit", type=int, default=limit, help=limit_help)
    parser.add_argument("--tile", type=int, default=112, help="pixels per picture in the grid")
    parser.add_argument("--batch-size", type=int, default=64)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="densessl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "pretrain", help="pre-train a backbone from a recipe (a shipped recipe's name or a YAML)"
    )
    p.add_argument(
        "config",
        nargs="?",
        default=None,
        help="YAML file or shipped recipe name, e.g. densecl/coco_r50_800ep (`densessl recipes` lists "
        "them); leave out with --method and --data for size-aware defaults",
    )
    p.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides anywhere on the line, e.g. train.epochs=100"
    )
    p.add_argument("--out", default=None, help="run directory (default: runs/<recipe name>)")
    p.add_argument(
        "--resume", default=None, help="'auto' (the run directory's newest checkpoint) or a checkpoint path"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="start over in a run directory that already holds a run"
    )
    p.add_argument(
        "--reproduce",
        default=None,
        metavar="CKPT",
        help="a new run with the config a checkpoint's ledger records (overrides still apply), "
        "warning about every difference from the environment that wrote it",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument(
        "--method",
        default=None,
        choices=AUTO_METHODS,
        help="without a recipe: pick one for --data from the dataset size and this machine",
    )
    p.add_argument(
        "--data",
        default=None,
        help="image source (folder:DIR, coco:ROOT, ...); with a recipe: its data.source",
    )

    sub.add_parser("recipes", help="list the shipped recipes (name, method, backbone, epochs, batch)")

    p = sub.add_parser(
        "bench", help="measure a recipe on this machine and recommend loader workers and CPU threads"
    )
    p.add_argument("config", help="YAML file or shipped recipe name (`densessl recipes` lists them)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, as for pretrain")
    p.add_argument(
        "--steps",
        type=int,
        default=16,
        help="steps of the full loop (after a quarter as many to warm up); the step alone is timed "
        "for a quarter of them, at least 3",
    )
    p.add_argument(
        "--batches", type=int, default=4, help="loader batches per worker count, after one to start"
    )
    p.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to measure"
    )

    methods = quick_methods()
    p = sub.add_parser(
        "compare",
        help="methods x pre-training seeds at equal compute on the synthetic scenes, probed, with "
        "mean, std, 95%% intervals and paired tests (Markdown table and PNG)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=["mocov2", "densecl", "slotcon"],
        metavar="METHOD[@KEY=VALUE...]",
        help=f"methods ({', '.join(methods)}), or variants of them with overrides of their recipe, "
        "compared as methods of their own: mocov2@optim.lr=0.03",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="pre-training seeds")
    p.add_argument("--minutes", type=float, default=4.0, help="pre-training minutes per run, every method")
    p.add_argument("--protocols", nargs="+", default=list(COMPARE_PROTOCOLS), choices=list(COMPARE_PROTOCOLS))
    p.add_argument(
        "--step-ms",
        nargs="*",
        default=[],
        metavar="METHOD=MS",
        help="step times measured elsewhere (benchmarks/step_time.py), instead of timing here",
    )
    p.add_argument(
        "--supervised-epochs",
        type=int,
        default=CompareSettings.supervised_epochs,
        help="epochs of the supervised ceiling (0: none)",
    )
    p.add_argument(
        "--whole-epochs",
        action="store_true",
        help="plan whole epochs (rounded down) instead of steps, as comparisons were planned before "
        "train.steps: repeats the tables measured so",
    )
    p.add_argument("--probe-train", type=int, default=600, help="held-out scenes the probes are fitted on")
    p.add_argument("--probe-test", type=int, default=300, help="held-out scenes the probes are scored on")
    p.add_argument(
        "--init-seed",
        type=int,
        default=None,
        help="the same initial weights for every seed (train.init_seed): seeds then vary the data "
        "order and augmentations only (default: each seed draws its own weights)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time, each in its own process with an equal share of the cores (steps are "
        "timed alone first, so the epochs do not depend on it)",
    )
    p.add_argument(
        "--out", default="runs/compare", help="where runs, summary.json, table.md and compare.png go"
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of every quick recipe")

    p = sub.add_parser("demo", help="pre-train on the synthetic scenes, then probe against random init")
    p.add_argument("--method", default="densecl", choices=methods, help="the quick recipe to run")
    p.add_argument(
        "--out", default=None, help="run directory (default: runs/demo, runs/demo-<method> for others)"
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the quick recipe")

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
    p.add_argument(
        "--num-heads", type=int, default=None, help="ViT attention heads, if the file does not say"
    )

    p = sub.add_parser("eval", help="evaluate a backbone (each protocol ends with one JSON line)")
    evals = p.add_subparsers(dest="protocol", required=True)
    from densessl.eval import classification_cli, finetune_cli, segmentation_cli, video_cli

    for module in (segmentation_cli, finetune_cli, classification_cli, video_cli):
        module.add_commands(evals)
    for parser_ in evals.choices.values():
        parser_.add_argument(
            "--save", default=None, metavar="RUN_DIR", help="also append the result to RUN_DIR/eval.jsonl"
        )
    r = evals.add_parser("report", help="one Markdown table and one PNG chart from several runs' results")
    r.add_argument(
        "runs", nargs="+", help="run directories (with eval.jsonl from --save, or a demo's summary.json)"
    )
    r.add_argument(
        "--out",
        default=None,
        help="writes OUT.md and OUT.png (default: report.md and report.png in the first run directory)",
    )
    r.set_defaults(func=cmd_report)

    p = sub.add_parser("viz", help="pictures of what a model learned")
    viz = p.add_subparsers(dest="picture", required=True)
    v = viz.add_parser("prototypes", help="top images of learned prototypes, their pixels tinted (PNG)")
    v.add_argument("checkpoint", help="training checkpoint of a method with prototypes (SlotCon)")
    limit_help = "use only the first N images (synthetic: 300)"
    _add_picture_args(v, "protos.png", "the pre-training crop", 0, limit_help)
    v.add_argument("--topk", type=int, default=5, help="images per prototype")
    v.add_argument("--sampling", type=int, default=20, help="prototypes shown, drawn at random (0: all used)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--device", default=None)
    v.set_defaults(func=cmd_viz_prototypes)

    from densessl.eval.cli_common import add_backbone_arguments

    v = viz.add_parser(
        "pca",
        aliases=["features"],
        help="each image beside its dense features' 3 principal components as colours (PNG)",
    )
    # any backbone, as for `eval`: ResNet or ViT, densessl, reference (MGC...) or exported weights;
    # the weights by position or by --weights, as `viz features` took them
    v.add_argument("checkpoint", nargs="?", default=None, help="the weights (or --weights)")
    add_backbone_arguments(v)
    next(a for a in v._actions if a.dest == "weights").required = False
    _add_picture_args(v, "pca.png", "a ViT's img_size, else 224", 8, "the first N images, one row each")
    v.set_defaults(func=cmd_viz_features)

    v = viz.add_parser(
        "matches", help="lines between the locations two views' loss pairs, by similarity (PNG)"
    )
    v.add_argument("checkpoint", help="training checkpoint of DenseCL, SlotCon or MGC (its heads are used)")
    v.add_argument("--data", required=True, help="image folder, folder:DIR, coco:ROOT or synthetic[:preset]")
    v.add_argument("--out", default="matches.png")
    v.add_argument(
        "--limit", type=int, default=3, help="the first N images, a row each (MGC: per granularity)"
    )
    v.add_argument("--seed", type=int, default=0, help="draws the recipe's two crops of each image")
    v.add_argument("--tile", type=int, default=192, help="pixels per view")
    v.add_argument("--max-lines", type=int, default=100, help="lines drawn per row, evenly spread (0: all)")
    v.add_argument("--device", default=None)
    v.set_defaults(func=cmd_viz_matches)

    v = viz.add_parser(
        "curves", help="training curves of runs from their metrics.jsonl, a panel per key (PNG)"
    )
    v.add_argument("runs", nargs="+", help="run directories (or their metrics.jsonl)")
    v.add_argument("--out", default="curves.png")
    v.add_argument(
        "--keys",
        nargs="+",
        default=None,
        help="key patterns (default: loss loss_* lr momentum probe_* collapse_*)",
    )
    v.add_argument("--x", choices=["step", "epoch"], default="step")
    v.add_argument("--labels", nargs="+", default=None, help="one name per run (default: directory names)")
    v.add_argument("--columns", type=int, default=3, help="panels per row")
    v.set_defaults(func=cmd_viz_curves)

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

    for each in _all_parsers(parser):
        _add_verbosity(each)
        # the eval protocols' parsers are built by their modules: give them the same help layout
        each.formatter_class = HelpFormatter
        for action in each._actions:
            # argparse formats no help line for an option without help: give its default one
            if action.help is None and action.option_strings and HelpFormatter.shows_default(action):
                action.help = "(default: %(default)s)"
    return parser


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _configure_threads(config: Any = None) -> None:
    """The CPU threads of this process: from a run's config (its workers and
    ``train.cpu_threads``), or, for eval and viz (no data workers), from the cores alone."""
    from densessl.runtime import configure_cpu_threads

    if config is None:
        configure_cpu_threads(0)
    else:
        configure_cpu_threads(config.data.workers, config.train.cpu_threads)


def _detect_machine() -> tuple[str, int, int]:
    """(device kind, memory in bytes of one device, CPU cores) for the size-aware defaults."""
    import torch

    from densessl.runtime import available_cores

    cores = available_cores()
    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_properties(0).total_memory, cores
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 * 1024**3
    return "cpu", memory, cores


def _data_source(spec: str) -> str:
    """``--data``: an image source spec, or a bare folder (read as ``folder:DIR``)."""
    if ":" not in spec and Path(spec).is_dir():
        return f"folder:{spec}"
    return spec


def _auto_config(args: argparse.Namespace):
    """Size-aware defaults for ``--method M --data D`` without a recipe: (config, recipe text)."""
    from densessl.autorecipe import build_config, choose_recipe, recipe_text
    from densessl.data.sources import parse_source

    source = _data_source(args.data)
    n_images = len(parse_source(source))
    kind, memory, cores = _detect_machine()
    world = launched_world_size()
    choice = choose_recipe(args.method, n_images, kind, memory * world, cores)
    config = build_config(choice, source, args.overrides)
    if not args.print_config:
        where = f"{kind}, {memory / 1024**3:.0f} GiB, {cores} cores"
        log.info("no recipe given: choosing one for %d images in %s (%s)", n_images, source, where)
        for reason in choice.reasons:
            log.info("  %s", reason)
    return config, recipe_text(config, choice, n_images)


def _reproduce_config(args: argparse.Namespace):
    """``--reproduce CKPT``: the config its ledger records with the line's overrides, the
    ledger, and the default run directory ``runs/<run>-reproduce``."""
    from densessl.config import apply_override, from_dict
    from densessl.training.checkpoint import load_checkpoint

    if args.config is not None or args.method:
        raise ConfigError("--reproduce takes its config from the checkpoint: give no recipe and no --method")
    path = Path(args.reproduce)
    ckpt = load_checkpoint(path)
    ledger = ckpt.get("ledger")
    if not ledger:
        log.warning(
            "%s records no ledger: its config is used, the environment that wrote it is unknown", path
        )
    data = json.loads(json.dumps(ledger["config"] if ledger else ckpt["config"]))
    overrides = list(args.overrides)
    if args.data:
        overrides.insert(0, f"data.source={json.dumps(_data_source(args.data))}")
    for override in overrides:
        apply_override(data, override)
    run = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return from_dict(data), ledger, Path("runs") / f"{run or 'run'}-reproduce"


def _reproduce_warnings(ledger: dict[str, Any], config: Any, device: Any) -> list[str]:
    """What differs between the recorded ledger and this run's: environment, data, overrides."""
    from densessl.data.sources import parse_source
    from densessl.distributed import world_size
    from densessl.training.ledger import build_ledger, compare_ledger

    # a data folder that is not here is an error (DataError), named in one line
    source = parse_source(config.data.source, length=config.data.synthetic_length)
    current = build_ledger(config, source, device, world_size())
    return compare_ledger(ledger, current)


def _resolve_pretrain(args: argparse.Namespace):
    """The config of a ``pretrain`` line, its default run directory and (size-aware) recipe text."""
    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        # argparse gives the first override the recipe's slot when no recipe is named
        args.overrides = [args.config, *args.overrides]
        args.config = None
    if args.config is None:
        if not (args.method and args.data):
            raise ConfigError(
                "pretrain needs a recipe (a YAML file or a name from `densessl recipes`), "
                "or --method and --data for size-aware defaults"
            )
        config, text = _auto_config(args)
        name = Path(args.data.partition(":")[2] or args.data).name or "data"
        return config, Path("runs") / f"{args.method}-{name}", text
    overrides = list(args.overrides)
    if args.data:
        overrides.insert(0, f"data.source={json.dumps(_data_source(args.data))}")
    config = load_config(args.config, overrides)
    if args.method and args.method != config.method.name:
        raise ConfigError(
            f"--method {args.method} contradicts the recipe's method {config.method.name}; "
            "give a recipe or --method, not both"
        )
    return config, Path("runs") / Path(args.config).name.removesuffix(".yaml"), None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pretrain_command(args: argparse.Namespace, out: Path, recipe: Path | None) -> str:
    """The ``densessl pretrain`` line that continues this run."""
    config = str(recipe) if recipe is not None else args.config
    # a step cap would stop the continued run at once
    overrides = [o for o in args.overrides if not o.startswith("train.max_steps=")] if recipe is None else []
    start = ["--reproduce", args.reproduce] if getattr(args, "reproduce", None) else [config]
    words = ["densessl", "pretrain", *start, "--out", str(out), "--resume", "auto", *overrides]
    return " ".join(shlex.quote(w) for w in words)


def pretrain_summary_lines(summary: dict[str, Any], resume_command: str) -> list[str]:
    """What a person reads at the end of a run: steps, time, final loss, checkpoint, next commands."""
    step, total = summary["step"], summary["total_steps"]
    metrics = summary.get("last_metrics") or {}
    loss = f", final loss {metrics['loss']:.4f} (step {metrics['step']})" if "loss" in metrics else ""
    state = "stopped" if summary.get("interrupted") or step < total else "finished"
    lines = [f"pre-training {state}: {step}/{total} steps in {_duration(summary['seconds'])}{loss}"]
    checkpoint = summary.get("checkpoint")
    if checkpoint:
        lines.append(f"  checkpoint: {checkpoint}")
    if step < total:
        lines.append(f"  continue: {resume_command}")
    if checkpoint:
        backbone = shlex.quote(str(Path(checkpoint).parent.parent / "backbone.pth"))
        lines.append(f"  export the backbone: densessl export {shlex.quote(checkpoint)} --out {backbone}")
        lines.append(f"  evaluate it: densessl eval seg-probe --weights {backbone} --data voc:VOC2012_ROOT")
    return lines


def cmd_pretrain(args: argparse.Namespace) -> int:
    from densessl.distributed import shutdown
    from densessl.training.interrupt import ignore_stop_signals
    from densessl.training.trainer import Trainer

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues a run and --overwrite starts over: give one of them")
    ledger = None
    if args.reproduce:
        # argparse gives the first override the recipe's slot, as in _resolve_pretrain
        if args.config is not None and "=" in args.config and not Path(args.config).exists():
            args.overrides = [args.config, *args.overrides]
            args.config = None
        config, ledger, default_out = _reproduce_config(args)
        recipe = None
    else:
        config, default_out, recipe = _resolve_pretrain(args)
    if args.print_config:
        print(recipe if recipe is not None else config_yaml(config), end="")
        return 0
    out = Path(args.out) if args.out else default_out
    recipe_file = None
    if recipe is not None:
        recipe_file = out / "recipe.yaml"
        # an existing run keeps the recipe it was started with (the trainer refuses or resumes it)
        if _is_main_process() and (args.overwrite or not (out / "checkpoints").is_dir()):
            out.mkdir(parents=True, exist_ok=True)
            recipe_file.write_text(recipe)
            log.info("recipe written to %s", recipe_file)
    if args.quiet_level > 0:
        config.train.progress = False
    _configure_threads(config)
    trainer = Trainer(config, out, resume=args.resume, overwrite=args.overwrite)
    if ledger:
        # every process reads the data, so that a missing folder stops them all, not the first alone
        differences = _reproduce_warnings(ledger, config, trainer.device)
        for line in differences if _is_main_process() else []:
            log.warning("differs from %s: %s", args.reproduce, line)
    resume_command = _pretrain_command(args, out, recipe_file)
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        # stopped cleanly and saved: what is left is printing and exiting with 130
        ignore_stop_signals()
        if _is_main_process():
            print(f"densessl: continue with: {resume_command}", file=sys.stderr)
        # no barrier: a Ctrl-C during set-up may have reached one process only
        shutdown(agreed=False)
        raise
    except BaseException:
        shutdown(agreed=False)
        raise
    if _is_main_process():
        if args.quiet_level <= 0:
            for line in pretrain_summary_lines(summary, resume_command):
                print(f"densessl: {line}", file=sys.stderr)
        print(json.dumps({"run_dir": str(out), **summary}))
    shutdown(agreed=True)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from densessl.export import describe
    from densessl.recipes import recipe_names

    rows = [("recipe", "method", "backbone", "epochs", "batch")]
    for name in recipe_names():
        config = load_config(name)
        model = {
            "arch": config.model.arch,
            "small_input": config.model.small_input,
            "width": config.model.width,
        }
        rows.append(
            (
                name,
                config.method.name,
                describe(model),
                str(config.train.epochs),
                str(config.train.batch_size),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from densessl.demo import format_table, quick_config_path, run_demo

    config = load_config(quick_config_path(args.method), args.overrides)
    _configure_threads(config)
    overrides = [*args.overrides, "train.progress=false"] if args.quiet_level > 0 else args.overrides
    out = args.out or ("runs/demo" if args.method == "densecl" else f"runs/demo-{args.method}")
    summary = run_demo(out, method=args.method, overrides=overrides)
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


def cmd_compare(args: argparse.Namespace) -> int:
    from densessl.compare import run_compare, split_variant

    step_ms = {}
    for item in args.step_ms:
        method, _, value = item.rpartition("=")  # a variant's name holds "=" too
        try:
            if not method:
                raise ValueError
            step_ms[method] = float(value)
        except ValueError:
            raise ConfigError(f"--step-ms takes METHOD=MS, got {item!r}") from None
    methods = quick_methods()
    for name in args.methods:
        try:
            method, _ = split_variant(name)
        except ValueError as error:
            raise ConfigError(f"--methods: {error}") from None
        if method not in methods:
            raise ConfigError(
                f"--methods: no method '{method}'{did_you_mean(method, methods)}; "
                f"choose from {', '.join(methods)}, or METHOD@KEY=VALUE for a variant"
            )
    if len(set(args.methods)) != len(args.methods):
        raise ConfigError("--methods names a method twice")
    if args.jobs < 1:
        raise ConfigError(f"--jobs takes a positive number of runs at a time, got {args.jobs}")
    settings = CompareSettings(
        methods=args.methods,
        seeds=args.seeds,
        minutes=args.minutes,
        protocols=args.protocols,
        step_ms=step_ms,
        supervised_epochs=args.supervised_epochs,
        whole_epochs=args.whole_epochs,
        probe_train=args.probe_train,
        probe_test=args.probe_test,
        overrides=[*args.overrides, "train.progress=false"] if args.quiet_level > 0 else list(args.overrides),
        jobs=args.jobs,
        init_seed=args.init_seed,
    )
    summary = run_compare(settings, args.out)
    print((Path(args.out) / "table.md").read_text(), end="")
    print(f"written to {args.out}: summary.json, table.md, compare.png")
    means = {m: {p: round(c["mean"], 2) for p, c in cells.items()} for m, cells in summary["methods"].items()}
    print(json.dumps({"out": str(args.out), "means": means}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from densessl.bench import run_bench

    config = load_config(args.config, args.overrides)
    # the bench runs the trainer: no progress bar between its progress lines
    config.train.progress = False
    _configure_threads(config)
    report = run_bench(config, args.workers, steps=args.steps, batches=args.batches)
    rec = report["recommended"]
    print(f"recommended: data.workers={rec['workers']} train.cpu_threads={rec['threads']} ({rec['reason']})")
    print(json.dumps(report))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from densessl.export import export

    info = export(args.checkpoint, args.out, to=args.to, encoder=args.encoder, num_heads=args.num_heads)
    print(json.dumps({"out": args.out, **info}))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from densessl.export import inspect_checkpoint

    report = inspect_checkpoint(args.checkpoint, num_heads=args.num_heads)
    print(
        f"{report['path']}: {report['layout']} checkpoint"
        + (f" of {report['method']}" if report["method"] else "")
    )
    if report["epoch"] is not None or report["step"] is not None:
        print(f"  progress: epoch {report['epoch']}, step {report['step']}")
    print(f"  backbone: {report['backbone']}")
    if "vit" in report:
        vit = report["vit"]
        heads = f"{vit['num_heads']} heads"
        if not vit["num_heads_recorded"]:
            heads += " (not recorded in the file: an assumption, --num-heads to change)"
        print(
            f"  vit: patch {vit['patch_size']}, position table for {vit['img_size']} px, "
            f"width {vit['width']}, {vit['depth']} blocks, {heads}"
        )
    for key, value in report.get("config", {}).items():
        print(f"  {key}: {value}")
    for role, counts in report["encoders"].items():
        mark = "  <- exported" if role == report["exported_encoder"] else ""
        print(f"  encoder '{role}': {counts['parameters']:,} parameters in {counts['tensors']} tensors{mark}")
    print(f"  export formats: {', '.join(report['formats'])}")
    if "ledger" in report:
        from densessl.training.ledger import ledger_lines

        print("  ledger:")
        for line in ledger_lines(report["ledger"]):
            print(f"    {line}")
    print(json.dumps(report))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.protocol != "report":
        _configure_threads()
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
    # never into the current folder unasked: beside the results it summarises
    out = Path(args.out) if args.out else Path(args.runs[0]) / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.md").write_text(text + "\n")
    chart = bar_chart(table, f"{out}.png")
    print(text)
    print(json.dumps({"table": f"{out}.md", "chart": str(chart), "runs": table}))
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    _configure_threads()
    return args.func(args)


def _training_method(checkpoint: str, needs: str):
    """The method and config of a densessl training checkpoint; any other file is one line saying
    what the picture ``needs`` and which picture any backbone has."""
    from densessl.errors import CheckpointError
    from densessl.export import method_from_checkpoint

    try:
        return method_from_checkpoint(checkpoint)
    except CheckpointError as exc:
        if "not a densessl training checkpoint" not in str(exc):
            raise
        raise CheckpointError(
            f"{exc}: {needs}; `densessl viz features --weights {checkpoint} --data ...` shows any "
            "backbone's features"
        ) from None


def cmd_viz_prototypes(args: argparse.Namespace) -> int:
    import torch

    from densessl.viz.prototypes import default_sizes, load_images, prototype_source, visualise_prototypes

    # a reference or exported file holds a backbone, never the prototypes themselves
    method, config = _training_method(
        args.checkpoint, "viz prototypes reads the prototypes of a densessl checkpoint (SlotCon)"
    )
    if not method.has_prototypes:
        raise ConfigError(
            f"{args.checkpoint}: method '{method.name}' has no prototypes to visualise "
            f"(`densessl viz features --weights {args.checkpoint} --data ...` shows its features)"
        )
    size, resize = default_sizes(config, args.size, args.resize)
    data = load_images(prototype_source(args.data, args.limit), size, resize, args.limit)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    summary = visualise_prototypes(
        method, data, args.out, args.topk, args.sampling, args.seed, args.tile, args.batch_size, device
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "prototypes"}))
    return 0


def cmd_viz_features(args: argparse.Namespace) -> int:
    import math

    from densessl.eval.cli_common import backbone_from_args, device_from_args, role_from_args
    from densessl.models.backbones import describe_backbone
    from densessl.viz.features import visualise_features
    from densessl.viz.prototypes import load_images, prototype_source

    if args.weights is None:
        if args.checkpoint is None:
            raise ConfigError(f"viz {args.picture}: give the weights (a checkpoint or export) or --weights")
        args.weights = args.checkpoint
    elif args.checkpoint is not None:
        raise ConfigError(f"viz {args.picture}: give the weights once, by position or by --weights")
    backbone = backbone_from_args(args)
    model = describe_backbone(backbone)
    # a ViT is shown at the size its position table was laid out for, a ResNet at ImageNet's
    size = args.size or int(model.get("img_size", 224))
    resize = args.resize or math.ceil(size * 8 / 7)
    if resize < size:
        raise ConfigError(f"--resize {resize} is smaller than --size {size}")
    data = load_images(prototype_source(args.data, args.limit), size, resize, args.limit)
    about = {"weights": str(args.weights), "encoder": role_from_args(args), "model": model}
    summary = visualise_features(
        backbone, data, args.out, args.tile, args.batch_size, device_from_args(args), about=about
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "names"}))
    return 0


def cmd_viz_matches(args: argparse.Namespace) -> int:
    import torch

    from densessl.viz.matches import require_correspondences, visualise_matches
    from densessl.viz.prototypes import prototype_source

    # the pairs come from the method's heads, which only a training checkpoint holds
    method, config = _training_method(
        args.checkpoint, "viz matches reads a densessl training checkpoint (its heads)"
    )
    require_correspondences(method)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    about = {"checkpoint": str(args.checkpoint)}
    summary = visualise_matches(
        method,
        config,
        prototype_source(args.data, args.limit),
        args.out,
        args.limit,
        args.seed,
        args.tile,
        args.max_lines,
        device,
        about,
    )
    print(json.dumps(summary))
    return 0


def cmd_viz_curves(args: argparse.Namespace) -> int:
    from densessl.viz.curves import DEFAULT_KEYS, plot_curves

    keys = args.keys or DEFAULT_KEYS
    summary = plot_curves(args.runs, args.out, keys, args.x, args.labels, args.columns)
    print(json.dumps(summary))
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
    "recipes": cmd_recipes,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "compare": cmd_compare,
    "export": cmd_export,
    "inspect": cmd_inspect,
    "eval": cmd_eval,
    "viz": cmd_viz,
    "data": cmd_data,
}


def configure_logging(verbosity: int) -> None:
    """Root level from -v / -q (INFO by default); third-party loggers stay at WARNING whatever it is."""
    level = {1: logging.DEBUG, 0: logging.INFO, -1: logging.WARNING}.get(
        max(-2, min(1, verbosity)), logging.ERROR
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # basicConfig does nothing when a handler exists
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; ``key=value`` words after options are overrides where the command
    takes them."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        is_override = [("=" in e and not e.startswith("-")) for e in extras]
        if hasattr(args, "overrides") and all(is_override):
            args.overrides = [*(args.overrides or []), *extras]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    args.quiet_level = getattr(args, "quiet", 0) - getattr(args, "verbose", 0)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed them
        return exc.code if isinstance(exc.code, int) else 2
    configure_logging(-args.quiet_level)
    # a command may ignore stop signals once it has stopped cleanly (the process is on its way
    # out); a caller that passed its own arguments (a script, a test) gets its handlers back
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        print(f"densessl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("densessl: interrupted", file=sys.stderr)
        return 130
    finally:
        if argv is not None and threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())

"""``densessl eval davis``: DAVIS-2017 label propagation with a frozen backbone (J&F).

Usage::

    densessl eval davis --weights W --data DAVIS_ROOT [--arch A --small-input --width X]
        [--split val] [--topk 10] [--context 20] [--radius 12] [--temperature 0.05]
        [--encoder query|teacher] [--trunk auto|crw|full] [--short-side N] [--device D]
        [--cache-dir DIR] [--save-dir DIR]

Prints one JSON line ``{"protocol": "davis", "weights": ..., "data": ..., <figures>}`` with the
figures of :func:`densessl.eval.video.run_davis` (J&F, J and F in percent, per sequence, seconds).

``--encoder`` picks the checkpoint's network (query or teacher) as in every protocol; ``--trunk``
how much of it propagates (CRW's truncated ResNet, or the whole backbone: a ViT's patch tokens,
its frames resized to a multiple of the patch size). ``--encoder auto|crw|full``, the former
spelling of ``--trunk``, still works.
"""

from __future__ import annotations

import argparse

from densessl.eval.cli_common import add_backbone_arguments, backbone_from_args, device_from_args, emit
from densessl.eval.video import CRW_DEFAULTS, ENCODER_MODES

__all__ = ["add_commands", "cmd_davis"]


def add_commands(evals: argparse._SubParsersAction) -> None:
    """Add the ``davis`` protocol to the subparsers of ``densessl eval``."""
    e = evals.add_parser("davis", help="DAVIS-2017 video label propagation on frozen features (J&F)")
    # --encoder auto|crw|full, its former spelling, still names the trunk
    add_backbone_arguments(e, extra_encoder_choices=ENCODER_MODES)
    e.add_argument(
        "--data", required=True, metavar="DAVIS_ROOT", help="the DAVIS folder (or the folder holding DAVIS/)"
    )
    e.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt (default val)")
    e.add_argument("--resolution", default="480p", help="frame folder under JPEGImages/ and Annotations/")
    e.add_argument("--sequences", nargs="+", default=None, help="evaluate only these sequences")
    e.add_argument("--topk", type=int, default=CRW_DEFAULTS["topk"], help="neighbours kept per location (10)")
    e.add_argument(
        "--context",
        "--video-len",
        dest="context",
        type=int,
        default=CRW_DEFAULTS["context"],
        help="preceding frames used as context besides the first frame (20)",
    )
    e.add_argument(
        "--radius",
        type=float,
        default=CRW_DEFAULTS["radius"],
        help="spatial radius in feature cells for the preceding frames (12)",
    )
    e.add_argument(
        "--temperature", type=float, default=CRW_DEFAULTS["temperature"], help="softmax temperature (0.05)"
    )
    e.add_argument(
        "--trunk",
        choices=ENCODER_MODES,
        default="auto",
        help="crw: ResNet without its last stage, layer3 at stride 1 (stride 8); full: the backbone as is "
        "(a ViT: its patch tokens); auto: crw for a standard ResNet, full otherwise",
    )
    e.add_argument(
        "--short-side",
        "--image-size",
        dest="short_side",
        type=int,
        default=None,
        help="resize frames to this short side before the encoder (default: native size, CRW's cropSize -1)",
    )
    e.add_argument("--batch-size", type=int, default=8, help="frames per forward pass")
    e.add_argument("--seed", type=int, default=0, help="seed of the random weights for --weights random")
    e.add_argument(
        "--save-dir", default=None, help="also write the predicted masks as <dir>/<seq>/<frame>.png"
    )
    e.set_defaults(func=cmd_davis)


def cmd_davis(args: argparse.Namespace) -> int:
    """Run the protocol and print its JSON line."""
    from densessl.data.davis import DAVIS2017
    from densessl.eval.video import run_davis

    trunk = args.encoder if args.encoder in ENCODER_MODES else args.trunk
    dataset = DAVIS2017(args.data, args.split, args.resolution, sequences=args.sequences)
    result = run_davis(
        backbone_from_args(args, seed=args.seed),
        dataset,
        args.short_side,
        topk=args.topk,
        context=args.context,
        radius=args.radius,
        temperature=args.temperature,
        encoder=trunk,
        batch_size=args.batch_size,
        device=device_from_args(args),
        cache_dir=args.cache_dir,
        save_dir=args.save_dir,
    )
    return emit("davis", args, result)

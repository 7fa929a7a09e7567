"""Where the spread of a comparison over pre-training seeds comes from.

Five measurements behind the README's "Why the seeds spread":

- ``probe-noise CKPT``: the probe's own sampling. One backbone is probed, as ``densessl compare``
  probes it, on disjoint held-out subsets of the comparison's sizes: five scoring sets of
  ``--test`` scenes with one fitting set, and three fitting sets of ``--train`` scenes with one
  scoring set. The standard deviations say how far the linear probe and retrieval mIoU move when
  nothing but the held-out scenes change.
- ``colour CKPT...``: how much a backbone's features depend on colour. Scenes and the same scenes
  with every hue rotated (by a half and a quarter turn) or turned grey: the mean cosine similarity
  of the same scene's pooled and per-cell features before and after, beside that of two different
  scenes. The scenes' classes are defined by texture and shape, never by colour, so a backbone
  that tells a scene from its hue-rotated copy more than from another scene identifies scenes by
  their colours.
- ``init-stats``: the initial weights of several seeds, as pre-training draws them (the quick
  recipe's backbone, train-mode batch norm), on a batch of scenes: the share of dead channels and
  the activation RMS after each stage, and the effective rank of the pooled and dense features.
- ``ceiling``: the supervised ceiling of ``densessl compare`` (per-pixel cross-entropy from the
  initial weights of each seed, then the linear probe) for the quick recipe with overrides, so a
  change of the network or of the ceiling's length is judged on how far the seeds' ceilings spread
  without pre-training anything; ``--classifier-seeds`` varies the classifier's initial weights
  alone, the backbone's staying the seed's.
- ``swap``: which part of the initial weights sets a run. Each seed is pre-trained as
  ``densessl compare`` trains it (quick recipe, ``--epochs``), except that the backbone's initial
  weights, and only those, are drawn from a donor seed; the heads, queues and every later draw
  (data order, augmentations) stay the seed's own. A donor equal to the seed repeats the
  comparison's run exactly. Then the linear probe and retrieval, as the comparison scores them.

Each ends with one JSON line. Usage::

    python benchmarks/seed_spread.py probe-noise runs/compare/mocov2_seed0/pretrain/checkpoints/last.pt
    python benchmarks/seed_spread.py colour runs/compare/mocov2_seed*/pretrain/checkpoints/last.pt
    python benchmarks/seed_spread.py init-stats --method mocov2 --seeds 0 1 2 3 4
    python benchmarks/seed_spread.py ceiling --seeds 0 1 --epochs 10 model.width=0.25
    python benchmarks/seed_spread.py ceiling --seeds 0 1 --classifier-seeds 0 1 2
    python benchmarks/seed_spread.py swap --seeds 0 1 --donors 0 1 --epochs 13 --out runs/swap
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from densessl.augment import normalize
from densessl.config import load_config
from densessl.data.synthetic import SyntheticScenes, resolve_config
from densessl.demo import initial_backbone, quick_config_path, synthetic_preset
from densessl.eval.retrieval import evaluate_nn
from densessl.eval.segmentation import extract_features, probe_features
from densessl.export import load_backbone
from densessl.training.checkpoint import restore_rng_state, rng_state
from densessl.training.trainer import build_initial_model, build_model, seed_everything


def probe_noise(checkpoint: str, preset: str, train: int, test: int) -> dict:
    """mIoU of one backbone over disjoint fitting and scoring subsets of the held-out scenes."""
    scenes = resolve_config(preset)
    size, classes = scenes.image_size, scenes.num_classes + 1
    backbone = load_backbone(checkpoint).eval()
    fit_f, fit_m = extract_features(backbone, SyntheticScenes(scenes, "val", 3 * train), size, 64, "cpu")
    score_f, score_m = extract_features(backbone, SyntheticScenes(scenes, "test", 5 * test), size, 64, "cpu")

    def linear(a: slice, b: slice) -> float:
        probe = probe_features(
            fit_f[a],
            fit_m[a],
            score_f[b],
            score_m[b],
            classes,
            head="linear",
            seeds=(0, 1, 2),
            epochs=30,
            lr=0.1,
            batch_size=64,
            train_resolution=size // 2,
            device="cpu",
        )  # fmt: skip  (the settings of densessl.compare.evaluate_backbone)
        return 100 * probe["miou"]

    def retrieval(a: slice, b: slice) -> float:
        return 100 * evaluate_nn(fit_f[a], fit_m[a], score_f[b], score_m[b], classes, device="cpu")["miou"]

    out: dict = {"checkpoint": checkpoint, "train": train, "test": test}
    first_fit, first_score = slice(0, train), slice(0, test)
    for name, protocol in (("linear", linear), ("nn", retrieval)):
        by_score = [protocol(first_fit, slice(i * test, (i + 1) * test)) for i in range(5)]
        by_fit = [protocol(slice(i * train, (i + 1) * train), first_score) for i in range(3)]
        out[name] = {
            "by_scoring_set": by_score,
            "sd_scoring": statistics.stdev(by_score),
            "by_fitting_set": by_fit,
            "sd_fitting": statistics.stdev(by_fit),
        }
        print(f"{name}: sd over scoring sets {out[name]['sd_scoring']:.2f}, over fitting sets "
              f"{out[name]['sd_fitting']:.2f}", flush=True)  # fmt: skip
    return out


def scene_batch(images: int) -> torch.Tensor:
    """The first ``images`` held-out ``easy`` scenes as one uint8 batch (B, 3, H, W)."""
    scenes = SyntheticScenes(resolve_config("easy"), "val", images)
    return torch.from_numpy(np.stack([scenes[i][0] for i in range(images)])).permute(0, 3, 1, 2)


def colour_dependence(checkpoints: list[str], images: int) -> dict:
    """Similarity of each scene's features to those of its colour-changed copies, and to others'."""
    batch = scene_batch(images)
    changes = {
        "hue_half_turn": TF.adjust_hue(batch, 0.5),
        "hue_quarter_turn": TF.adjust_hue(batch, 0.25),
        "grey": TF.rgb_to_grayscale(batch, 3),
    }
    out = {}
    for checkpoint in checkpoints:
        backbone = load_backbone(checkpoint).eval()
        with torch.no_grad():
            dense = F.normalize(backbone(normalize(batch)).float(), dim=1)
            pooled = F.normalize(dense.mean(dim=(2, 3)), dim=1)
            row: dict = {}
            for name, changed in changes.items():
                dense_c = F.normalize(backbone(normalize(changed)).float(), dim=1)
                pooled_c = F.normalize(dense_c.mean(dim=(2, 3)), dim=1)
                row[name] = {
                    "pooled": float((pooled * pooled_c).sum(1).mean()),
                    "dense": float((dense * dense_c).sum(1).mean()),
                }
            others = pooled @ pooled.T
            row["other_scenes_pooled"] = float(others[~torch.eye(images, dtype=torch.bool)].mean())
        out[checkpoint] = row
        print(checkpoint, json.dumps(row), flush=True)
    return out


def effective_rank(features: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values of the centred rows."""
    values = torch.linalg.svdvals(features - features.mean(0))
    p = values / values.sum()
    return float(torch.exp(-(p * torch.log(p + 1e-12)).sum()))


def init_stats(method: str, seeds: list[int], images: int) -> dict:
    """Per seed: dead-channel share and activation RMS after each stage, feature effective ranks."""
    batch = scene_batch(images).float()
    batch = (batch - batch.mean(dim=(0, 2, 3), keepdim=True)) / batch.std(dim=(0, 2, 3), keepdim=True)
    out = {}
    for seed in seeds:
        backbone = initial_backbone(load_config(quick_config_path(method), [f"train.seed={seed}"])).train()
        row: dict = {}
        with torch.no_grad():
            h = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(batch))))
            for stage in ("layer1", "layer2", "layer3", "layer4"):
                h = getattr(backbone, stage)(h)
                dead = ((h > 0).float().mean(dim=(0, 2, 3)) == 0).float().mean()
                row[stage] = {"dead_channels": float(dead), "rms": float(h.pow(2).mean().sqrt())}
            row["pooled_rank"] = effective_rank(h.mean(dim=(2, 3)))
            row["dense_rank"] = effective_rank(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]))
        out[seed] = row
        print(seed, json.dumps(row), flush=True)
    return out


def initial_backbone_then_reseed(config: Any, classifier_seed: int) -> torch.nn.Module:
    """The backbone a run of ``config`` starts from, then the random state reset to
    ``classifier_seed``, so that what is drawn next (the ceiling's classifier) follows that seed."""
    backbone = initial_backbone(config)
    torch.manual_seed(classifier_seed)
    return backbone


def ceiling(
    method: str,
    seeds: list[int],
    epochs: int,
    overrides: list[str],
    classifier_seeds: list[int] | None = None,
) -> dict:
    """Per seed: the supervised ceiling's linear-probe mIoU, last training loss and minutes. With
    ``classifier_seeds``, per seed and classifier seed: only the 1x1 classifier's initial weights
    follow the classifier seed (:func:`initial_backbone_then_reseed`)."""
    from densessl.compare import CompareSettings, evaluate_backbone, recipe_config, train_ceiling

    out: dict = {}
    for seed in seeds:
        for classifier_seed in classifier_seeds or [None]:
            config = recipe_config(method, CompareSettings(), [f"train.seed={seed}", *overrides])
            scenes = resolve_config(synthetic_preset(config.data.source))
            started = time.perf_counter()
            build = initial_backbone
            if classifier_seed is not None:
                build = partial(initial_backbone_then_reseed, classifier_seed=classifier_seed)
            # train_ceiling builds its own backbone: hand it this builder
            with mock.patch("densessl.demo.initial_backbone", build):
                backbone, trained = train_ceiling(config, scenes, epochs, seed)
            key = seed if classifier_seed is None else f"{seed}_classifier{classifier_seed}"
            out[key] = {
                "linear": evaluate_backbone(backbone, scenes, ["linear"])["linear"],
                "final_loss": trained["losses"][-1],
                "minutes": (time.perf_counter() - started) / 60,
            }
            print(key, json.dumps(out[key]), flush=True)
    scores = [row["linear"] for row in out.values()]
    out["mean"] = statistics.fmean(scores)
    out["std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return out


def outer_backbones(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The backbones inside a method by name (a query encoder's and its momentum copy's), without
    the modules nested in them."""
    from densessl.models.backbones import ResNetBackbone
    from densessl.models.vit import ViTBackbone

    found: dict[str, torch.nn.Module] = {}
    for name, sub in module.named_modules():
        inside = any(name.startswith(f"{outer}.") for outer in found)
        if isinstance(sub, (ResNetBackbone, ViTBackbone)) and not inside:
            found[name] = sub
    return found


def initial_model_with_backbone_of(config: Any, donor: int) -> torch.nn.Module:
    """The method as a run of ``config`` starts, except that its backbones' initial weights are
    those ``train.seed=donor`` would draw; the random state afterwards is the run's own, so the
    data order and augmentations do not change."""
    method = build_initial_model(config)
    state = rng_state()
    seed_everything(donor)
    donor_backbones = outer_backbones(build_model(config))
    for name, backbone in outer_backbones(method).items():
        backbone.load_state_dict(donor_backbones[name].state_dict())
    restore_rng_state(state)
    return method


def swap(method: str, seeds: list[int], donors: list[int], epochs: int, out_dir: str) -> dict:
    """Per seed and donor: the run of ``seed`` whose backbone starts from the weights of ``donor``."""
    from densessl.compare import CompareSettings, evaluate_backbone, recipe_config
    from densessl.training.trainer import Trainer

    scenes = resolve_config("easy")
    out: dict = {}
    for seed in seeds:
        for donor in donors:
            config = recipe_config(
                method, CompareSettings(), [f"train.seed={seed}", f"train.epochs={epochs}"]
            )
            run = Path(out_dir) / f"{method}_seed{seed}_backbone{donor}"
            # the trainer builds its own model: hand it the swapped one
            swapped = partial(initial_model_with_backbone_of, donor=donor)
            with mock.patch("densessl.training.trainer.build_initial_model", swapped):
                summary = Trainer(config, run, resume="auto-or-new").fit()
            backbone = load_backbone(summary["checkpoint"]).eval()
            row = evaluate_backbone(backbone, scenes, ["linear", "nn"])
            out[f"seed{seed}_backbone{donor}"] = row
            print(seed, donor, json.dumps(row), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe-noise")
    p.add_argument("checkpoint")
    p.add_argument("--preset", default="easy")
    p.add_argument("--train", type=int, default=600, help="fitting scenes per subset (compare's)")
    p.add_argument("--test", type=int, default=300, help="scoring scenes per subset (compare's)")
    p = sub.add_parser("colour")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--images", type=int, default=256)
    p = sub.add_parser("init-stats")
    p.add_argument("--method", default="mocov2")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--images", type=int, default=64)
    p = sub.add_parser("ceiling")
    p.add_argument("--method", default="mocov2", help="whose quick recipe gives the network and crops")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument(
        "--classifier-seeds", type=int, nargs="+", help="draw the classifier's initial weights from each"
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the quick recipe")
    p = sub.add_parser("swap")
    p.add_argument("--method", default="mocov2")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the heads and data")
    p.add_argument("--donors", type=int, nargs="+", default=[0, 1], help="seeds of the backbone")
    p.add_argument("--epochs", type=int, default=13, help="13: MoCo-v2 in the verdict's plan")
    p.add_argument("--out", default="runs/swap", help="where the pre-training runs go")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.command == "probe-noise":
        result = probe_noise(args.checkpoint, args.preset, args.train, args.test)
    elif args.command == "colour":
        result = colour_dependence(args.checkpoints, args.images)
    elif args.command == "init-stats":
        result = init_stats(args.method, args.seeds, args.images)
    elif args.command == "ceiling":
        result = ceiling(args.method, args.seeds, args.epochs, args.overrides, args.classifier_seeds)
    else:
        result = swap(args.method, args.seeds, args.donors, args.epochs, args.out)
    print(json.dumps({"command": args.command, "seconds": time.perf_counter() - started, "result": result}))


if __name__ == "__main__":
    main()

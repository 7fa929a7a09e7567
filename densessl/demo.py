"""The main job: pre-train on the embedded synthetic scenes, then show what it bought.

``densessl demo`` pre-trains a method with its quick CPU recipe, probes the result and a
randomly initialised backbone of the same architecture with the frozen dense linear probe on
held-out scenes (probe training on the ``val`` split, scoring on ``test``, both unseen in
pre-training), prints a table and writes ``summary.json`` into the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densessl.config import ConfigError, ExperimentConfig, did_you_mean, load_config
from densessl.data.synthetic import SynthConfig, SyntheticScenes, resolve_config
from densessl.eval.segmentation import extract_features, probe_features
from densessl.export import load_backbone
from densessl.models.backbones import Backbone
from densessl.recipes import quick_methods, recipe_path
from densessl.training.trainer import Trainer, build_initial_model

log = logging.getLogger(__name__)


def quick_config_path(method: str) -> Path:
    """The shipped quick recipe of ``method`` (``densessl/recipes/quick/<method>_synthetic.yaml``)."""
    path = recipe_path(f"quick/{method}_synthetic")
    if path is None:
        available = quick_methods()
        raise ConfigError(
            f"no quick recipe for '{method}'{did_you_mean(method, available)}; "
            f"available: {', '.join(available) or 'none'}"
        )
    return path


def synthetic_preset(source: str) -> str | None:
    return source.split(":", 1)[1] if ":" in source else None


def initial_backbone(config: ExperimentConfig) -> Backbone:
    """The exported backbone exactly as pre-training with ``config`` initialises it (the random
    floor): the whole method is built as the trainer builds it, since a method may change its
    backbone after building it (MGC re-draws every Linear layer once its momentum copy exists)."""
    return build_initial_model(config).export_encoder().eval()


def probe_on_scenes(
    backbone: Backbone,
    scenes: SynthConfig,
    probe_train: int = 600,
    probe_test: int = 300,
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 30,
    device: str | None = None,
    name: str = "backbone",
) -> dict[str, Any]:
    """Dense linear probe trained on the held-out ``val`` scenes and scored on ``test``
    (percentages: mIoU mean, std and per seed, pixel accuracy).

    The same computation as :func:`densessl.eval.segmentation.run_linear_probe` (features once,
    one probe per seed), spelled out so that each step logs a line: the probes take minutes on a
    CPU, and a silent demo looks hung.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    log.info("probing %s: features of %d + %d held-out scenes", name, probe_train, probe_test)
    train_f, train_m = extract_features(
        backbone, SyntheticScenes(scenes, "val", probe_train), scenes.image_size, 64, device
    )
    test_f, test_m = extract_features(
        backbone, SyntheticScenes(scenes, "test", probe_test), scenes.image_size, 64, device
    )
    mious, accs = [], []
    for i, seed in enumerate(seeds, start=1):
        t1 = time.perf_counter()
        probe = probe_features(
            train_f,
            train_m,
            test_f,
            test_m,
            scenes.num_classes + 1,
            head="linear",
            seeds=(seed,),
            epochs=epochs,
            lr=0.1,
            batch_size=64,
            train_resolution=scenes.image_size // 2,
            device=device,
        )
        mious.append(100 * probe["miou"])
        accs.append(100 * probe["pixel_acc"])
        log.info(
            "probing %s: seed %d (%d/%d): mIoU %.2f%% after %d epochs (%.1f s)",
            name,
            seed,
            i,
            len(seeds),
            mious[-1],
            epochs,
            time.perf_counter() - t1,
        )
    log.info("probing %s: done in %.1f min", name, (time.perf_counter() - t0) / 60)
    return {
        "miou": float(np.mean(mious)),
        "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else 0.0,
        "miou_per_seed": mious,
        "pixel_acc": float(np.mean(accs)),
    }


def run_demo(
    out_dir: str | Path,
    method: str = "densecl",
    overrides: list[str] | None = None,
    probe_train: int = 600,
    probe_test: int = 300,
    probe_seeds: tuple[int, ...] = (0, 1, 2),
    probe_epochs: int = 30,
) -> dict[str, Any]:
    """Pre-train, probe pre-trained and random backbones, and return (and save) the summary."""
    out_dir = Path(out_dir)
    config = load_config(quick_config_path(method), overrides)
    if not config.data.source.startswith("synthetic"):
        raise ConfigError("the demo runs on the embedded synthetic scenes (data.source=synthetic[:preset])")

    started = time.perf_counter()
    log.info("demo: pre-training %s with its quick recipe into %s", method, out_dir / "pretrain")
    # resume an interrupted (or finished) pre-training when the demo runs again, else start one
    result = Trainer(config, out_dir / "pretrain", resume="auto-or-new").fit()
    pretrain_minutes = (time.perf_counter() - started) / 60

    scenes = resolve_config(synthetic_preset(config.data.source))
    device = "cuda" if torch.cuda.is_available() else "cpu"

    rows = []
    backbones = {method: load_backbone(result["checkpoint"]), "random init": initial_backbone(config)}
    for name, backbone in backbones.items():
        t0 = time.perf_counter()
        row = probe_on_scenes(
            backbone, scenes, probe_train, probe_test, probe_seeds, probe_epochs, device, name=name
        )
        minutes = (time.perf_counter() - t0) / 60 + (pretrain_minutes if name == method else 0.0)
        rows.append({"method": name, **row, "minutes": minutes})
    summary = {
        "method": method,
        "backbone": {
            "arch": config.model.arch,
            "small_input": config.model.small_input,
            "width": config.model.width,
        },
        "pretrain_steps": result["step"],
        "pretrain_minutes": pretrain_minutes,
        "probe": {
            "train_images": probe_train,
            "test_images": probe_test,
            "seeds": list(probe_seeds),
            "image_size": scenes.image_size,
            "classes": scenes.num_classes + 1,
        },
        "results": rows,
        "gain_miou": rows[0]["miou"] - rows[1]["miou"],
        "total_minutes": (time.perf_counter() - started) / 60,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'method':<14}{'mIoU (%)':>18}{'minutes':>10}", "-" * 42]
    for row in summary["results"]:
        lines.append(
            f"{row['method']:<14}{row['miou']:>10.2f} ± {row['miou_std']:<5.2f}{row['minutes']:>10.1f}"
        )
    lines.append(
        f"gain over random init: {summary['gain_miou']:+.2f} mIoU points "
        f"(mean of {len(summary['probe']['seeds'])} probe seeds)"
    )
    return "\n".join(lines)

"""Dense-probe mIoU of several methods pre-trained for the same wall-clock time.

For each method the quick synthetic recipe is timed for a few steps on this machine; its epoch
count is then set so pre-training fits ``--minutes`` (the whole cosine schedule runs inside the
budget, as a user with that budget would run it). Each method is pre-trained with
``--seeds`` training seeds and probed like ``densessl demo`` (linear probe on held-out scenes,
3 probe seeds); the random-initialisation floor of every seed is probed too. Runs finished
earlier are reused (their ``result.json``), so an interrupted comparison can be restarted.

    python benchmarks/equal_time.py --minutes 6 --out runs/equal_time
    python benchmarks/equal_time.py --methods mocov2 slotcon --seeds 0 --minutes 3

Prints a Markdown table and writes ``summary.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from densessl.config import load_config
from densessl.data.synthetic import resolve_config
from densessl.demo import initial_backbone, probe_on_scenes, quick_config_path, synthetic_preset
from densessl.export import load_backbone
from densessl.training.trainer import Trainer


def seconds_per_epoch(method: str, out: Path, overrides: list[str], steps: int) -> float:
    """Time the second window of ``steps`` training steps (the first one warms up) for one epoch."""
    extra = [f"train.max_steps={2 * steps}", f"train.log_every={steps}", "train.tensorboard=false"]
    config = load_config(quick_config_path(method), [*overrides, *extra, "train.progress=false"])
    Trainer(config, out).fit()
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return config.data.synthetic_length / last["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["mocov2", "densecl", "slotcon"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=6.0, help="pre-training budget per run")
    parser.add_argument("--calibration-steps", type=int, default=12)
    parser.add_argument(
        "--step-ms",
        nargs="*",
        default=[],
        metavar="METHOD=MS",
        help="step times measured on a quiet machine (benchmarks/step_time.py), used instead of calibrating",
    )
    parser.add_argument("--out", default="runs/equal_time")
    parser.add_argument("overrides", nargs="*", help="overrides applied to every recipe")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    plan_file = out / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
    given = {k: float(v) for k, v in (item.split("=", 1) for item in args.step_ms)}
    for method in args.methods:
        if method not in plan and method in given:
            length = load_config(quick_config_path(method), args.overrides)
            steps = length.data.synthetic_length // length.train.batch_size
            epoch_s = given[method] * steps / 1000
            epochs = max(1, math.floor(args.minutes * 60 / epoch_s))
            plan[method] = {"seconds_per_epoch": epoch_s, "epochs": epochs, "source": "--step-ms"}
            plan_file.write_text(json.dumps(plan, indent=2))
        if method not in plan:
            calibration = out / f"calibrate_{method}"
            epoch_s = seconds_per_epoch(method, calibration, args.overrides, args.calibration_steps)
            epochs = max(1, math.floor(args.minutes * 60 / epoch_s))
            plan[method] = {"seconds_per_epoch": epoch_s, "epochs": epochs}
            plan_file.write_text(json.dumps(plan, indent=2))
        print(f"{method}: {plan[method]['seconds_per_epoch']:.1f} s/epoch -> {plan[method]['epochs']} epochs")

    results = []
    for seed in args.seeds:
        for method in [*args.methods, "random"]:
            result_file = out / f"{method}_seed{seed}" / "result.json"
            if result_file.is_file():
                results.append(json.loads(result_file.read_text()))
                continue
            source = "mocov2" if method == "random" else method
            overrides = [*args.overrides, f"train.seed={seed}"]
            if method != "random":
                overrides.append(f"train.epochs={plan[method]['epochs']}")
            config = load_config(quick_config_path(source), overrides)
            started = time.perf_counter()
            if method == "random":
                backbone, minutes = initial_backbone(config), 0.0
            else:
                summary = Trainer(config, result_file.parent / "pretrain", resume="auto").fit()
                minutes = (time.perf_counter() - started) / 60
                backbone = load_backbone(summary["checkpoint"])
            scenes = resolve_config(synthetic_preset(config.data.source))
            row = probe_on_scenes(backbone, scenes)
            epochs = 0 if method == "random" else config.train.epochs
            record = {"method": method, "seed": seed, "epochs": epochs, "minutes": minutes, **row}
            result_file.parent.mkdir(parents=True, exist_ok=True)
            result_file.write_text(json.dumps(record, indent=2))
            results.append(record)
            print(json.dumps(record))

    table = ["| method | epochs | pre-train min | mIoU per seed | mIoU mean ± std |", "|---|---|---|---|---|"]
    summary = {"minutes_budget": args.minutes, "plan": plan, "runs": results, "methods": {}}
    for method in [*args.methods, "random"]:
        rows = [r for r in results if r["method"] == method]
        mious = [r["miou"] for r in rows]
        mean = statistics.mean(mious)
        std = statistics.stdev(mious) if len(mious) > 1 else 0.0
        summary["methods"][method] = {"miou_mean": mean, "miou_std": std, "seeds": len(rows)}
        minutes = statistics.mean(r["minutes"] for r in rows)
        table.append(
            f"| {method} | {rows[0]['epochs']} | {minutes:.1f} | "
            f"{', '.join(f'{m:.2f}' for m in mious)} | {mean:.2f} ± {std:.2f} |"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(table))


if __name__ == "__main__":
    main()

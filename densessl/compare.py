"""``densessl compare``: methods x pre-training seeds at equal compute, probed, with statistics.

Each method's quick recipe (the synthetic scenes) is timed on this machine, or given step times
are used, and its length set in steps so that pre-training fits the same number of minutes (the
last epoch may end part-way, ``train.steps``; ``whole_epochs`` rounds down to whole epochs). Every
method is pre-trained once per seed; beside them, for every seed, the **random** floor (the
backbone exactly as pre-training initialises it) and the **supervised** ceiling (the same backbone
trained with per-pixel cross-entropy on the labelled pre-training scenes,
:mod:`densessl.eval.supervised`). A ViT method (MGC) gets its own random floor, ``random_vit``.

Every backbone is probed on held-out scenes by the dense protocols, ``linear`` (1x1-conv probe,
mIoU, mean of 3 probe seeds), ``nn`` (nearest-neighbour retrieval mIoU), ``cluster`` (K-means
with K = classes, Hungarian matching, mIoU), and the global ones, ``svm`` (presence mAP) and
``knn`` (largest-object top-1), all in percent.

Per method and protocol the summary gives the mean, the standard deviation over seeds, a 95%
interval of the mean (Student's t with n - 1 degrees of freedom) and one of the standard
deviation (chi-square with n - 1); each pair of methods gets a paired t-test
over their common seeds (the same seed gives both the same initial weights and data order).
``gap_closed`` is ``(method - random) / (supervised - random)``. Results land in ``--out``:
one ``result.json`` per run (a comparison that stopped resumes where it stopped: finished runs
are read back, a pre-training that was cut continues from its checkpoint), ``summary.json``,
``table.md`` and ``compare.png``. ``summary.json`` also holds the scene statistics of
:mod:`densessl.eval.scenes` (objects per image, object size in feature cells, crops cutting
objects), which say whether the scenes leave dense features anything to win.

A method may be given as a **variant**, ``METHOD@KEY=VALUE[@KEY=VALUE...]`` (``mocov2@optim.lr=0.03``):
its quick recipe with those overrides, compared as a method of its own, so that a knob's effect on
the ranking is measured the same way as a method's (same seeds, paired tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "PROTOCOLS",
    "CompareSettings",
    "describe",
    "evaluate_backbone",
    "markdown_tables",
    "paired_test",
    "run_compare",
    "summarise",
    "train_ceiling",
]

#: protocol -> what it reports (all in percent)
PROTOCOLS: dict[str, str] = {
    "linear": "linear-probe mIoU",
    "nn": "retrieval mIoU",
    "cluster": "clustering mIoU",
    "svm": "presence mAP",
    "knn": "largest-object k-NN top-1",
}
FLOOR, CEILING = "random", "supervised"
#: the floor of a ViT method (MGC): a random ViT
VIT_FLOOR = "random_vit"
#: separates a method from the overrides of a variant: ``mocov2@optim.lr=0.03``
VARIANT_SEPARATOR = "@"


def split_variant(name: str) -> tuple[str, list[str]]:
    """``"mocov2@optim.lr=0.03@method.queue_size=1024"`` -> ``("mocov2", ["optim.lr=0.03", ...])``."""
    method, *overrides = name.split(VARIANT_SEPARATOR)
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key:
            raise ValueError(f"a variant's overrides are KEY=VALUE, got {override!r} in {name!r}")
    return method, overrides


#: the longest folder name a variant keeps whole (file systems allow 255 bytes, less the
#: ``calibrate_`` and ``_seedN`` around it)
MAX_FOLDER_BYTES = 200


def _folder_safe(name: str) -> str:
    """``name`` with path separators and colons (``synthetic:medium``) made safe for a folder;
    a variant too long for one (several overrides of whole pipelines) keeps its start and a hash
    of the whole, the same on every resume."""
    safe = name.replace("/", "-").replace(":", "-")
    if len(safe.encode()) <= MAX_FOLDER_BYTES:
        return safe
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    start = safe.encode()[: MAX_FOLDER_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{start}~{digest}"


def run_directory_name(name: str, seed: int) -> str:
    """The folder of one run."""
    return f"{_folder_safe(name)}_seed{seed}"


@dataclass
class CompareSettings:
    methods: list[str] = field(default_factory=lambda: ["mocov2", "densecl", "slotcon"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    #: pre-training minutes per run, the same for every method
    minutes: float = 4.0
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    #: method -> milliseconds per step measured elsewhere, instead of timing here
    step_ms: dict[str, float] = field(default_factory=dict)
    calibration_steps: int = 12
    #: epochs of the supervised ceiling (0: no ceiling), of the floor recipe's scenes: 8 x 16384
    #: scenes of the quick ResNet recipes, 1024 steps (at 320 steps the network is far from trained)
    supervised_epochs: int = 8
    #: plan whole epochs, rounded down, instead of steps (how budgets were planned before
    #: ``train.steps``: repeats comparisons measured so)
    whole_epochs: bool = False
    probe_train: int = 600
    probe_test: int = 300
    #: overrides applied to every recipe
    overrides: list[str] = field(default_factory=list)
    device: str | None = None
    #: runs (pre-training + probes) carried out at once, each in its own process
    jobs: int = 1
    #: the initial weights of every run (``train.init_seed``), so that seeds vary the data order
    #: and augmentations only; None: each seed draws its own weights too
    init_seed: int | None = None


def recipe_config(name: str, settings: CompareSettings, extra: Sequence[str] = ()) -> Any:
    """The quick recipe of a method or variant with the comparison's overrides, the variant's, then
    ``extra``."""
    from densessl.config import load_config
    from densessl.demo import quick_config_path

    method, variant = split_variant(name)
    return load_config(quick_config_path(method), [*settings.overrides, *variant, *extra])


# -- statistics -----------------------------------------------------------------------------------
def describe(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation, the two-sided Student-t interval of the mean and the
    chi-square interval of the standard deviation (``std_low``, ``std_high``).

    The second says how well a few seeds pin a spread down: five seeds with a standard deviation
    of 1.0 leave the true one anywhere in 0.60-2.87 at 95%, so one such spread over or under a
    threshold decides little on its own."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("no values to describe")
    mean = float(statistics.fmean(values))
    if n == 1:
        return {"n": 1, "mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean}
    std = float(statistics.stdev(values))
    tail = (1 - confidence) / 2
    half = float(stats.t.ppf(1 - tail, n - 1)) * std / math.sqrt(n)
    # (n - 1) s^2 / sigma^2 follows chi-square with n - 1 degrees of freedom
    std_low = std * math.sqrt((n - 1) / float(stats.chi2.ppf(1 - tail, n - 1)))
    std_high = std * math.sqrt((n - 1) / float(stats.chi2.ppf(tail, n - 1)))
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "std_low": std_low,
        "std_high": std_high,
    }


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired two-sided t-test of ``a - b`` (values of the same seeds, in the same order)."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    diff = [x - y for x, y in zip(a, b, strict=True)]
    out = {"n": len(diff), "mean_difference": float(statistics.fmean(diff)) if diff else math.nan}
    if len(diff) < 2 or statistics.pstdev(diff) == 0:
        return {**out, "t": math.nan, "p": math.nan}
    result = stats.ttest_rel(a, b)
    return {**out, "t": float(result.statistic), "p": float(result.pvalue)}


def summarise(results: list[dict[str, Any]], protocols: Sequence[str]) -> dict[str, Any]:
    """Per method and protocol :func:`describe`, the gap closed between floor and ceiling, and a
    :func:`paired_test` for each pair of methods over their common seeds."""
    methods = list(dict.fromkeys(r["method"] for r in results))
    by = {(r["method"], r["seed"]): r["scores"] for r in results}
    table: dict[str, dict[str, Any]] = {}
    for method in methods:
        table[method] = {}
        for protocol in protocols:
            values = [by[(m, s)][protocol] for (m, s) in by if m == method and protocol in by[(m, s)]]
            if values:
                table[method][protocol] = describe(values)
    # the floor and the ceiling are ResNets: a gap is measured for methods of that family only
    vit = {r["method"] for r in results if str(r.get("arch", "")).startswith("vit")}
    for method in methods:
        if method in vit:
            continue
        for protocol, cell in table[method].items():
            floor = table.get(FLOOR, {}).get(protocol)
            ceiling = table.get(CEILING, {}).get(protocol)
            # only where the ceiling is above the floor: otherwise there is no gap to close
            if floor and ceiling and ceiling["mean"] > floor["mean"]:
                cell["gap_closed"] = (cell["mean"] - floor["mean"]) / (ceiling["mean"] - floor["mean"])
    pairs = []
    for first, second in itertools.combinations(methods, 2):
        for protocol in protocols:
            seeds = sorted(
                s
                for (m, s), scores in by.items()
                if m == first and protocol in scores and protocol in by.get((second, s), {})
            )
            if not seeds:
                continue
            a = [by[(first, s)][protocol] for s in seeds]
            b = [by[(second, s)][protocol] for s in seeds]
            pairs.append({"a": first, "b": second, "protocol": protocol, **paired_test(a, b)})
    return {"methods": table, "pairs": pairs}


def markdown_tables(summary: dict[str, Any], protocols: Sequence[str]) -> str:
    """The per-method table (mean ± std [95% interval], gap closed), the spreads with their
    intervals and the pairwise tests."""
    head = "| method | " + " | ".join(PROTOCOLS[p] for p in protocols) + " |"
    lines = [head, "|---" * (len(protocols) + 1) + "|"]
    for method, cells in summary["methods"].items():
        row = [method]
        for protocol in protocols:
            c = cells.get(protocol)
            if c is None:
                row.append("")
                continue
            text = f"{c['mean']:.2f} ± {c['std']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"
            if "gap_closed" in c and method not in (FLOOR, CEILING, VIT_FLOOR):
                text += f" ({round(100 * c['gap_closed'])}%)"  # an int: never "-0%"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| method | protocol | seeds | std over seeds | its 95% interval |", "|---" * 5 + "|"]
    for method, cells in summary["methods"].items():
        for protocol in protocols:
            c = cells.get(protocol)
            if c is not None and "std_low" in c:
                lines.append(
                    f"| {method} | {PROTOCOLS[protocol]} | {c['n']} | {c['std']:.2f} | "
                    f"[{c['std_low']:.2f}, {c['std_high']:.2f}] |"
                )
    lines += ["", "| a | b | protocol | seeds | mean a - b | t | p |", "|---|---|---|---|---|---|---|"]
    for pair in summary["pairs"]:
        if {pair["a"], pair["b"]} & {FLOOR, CEILING, VIT_FLOOR}:
            continue
        lines.append(
            f"| {pair['a']} | {pair['b']} | {pair['protocol']} | {pair['n']} | "
            f"{pair['mean_difference']:+.2f} | {pair['t']:.2f} | {pair['p']:.3f} |"
        )
    return "\n".join(lines) + "\n"


# -- probing ----------------------------------------------------------------------------------------
def evaluate_backbone(
    backbone: Any,
    scenes: Any,
    protocols: Sequence[str],
    probe_train: int = 600,
    probe_test: int = 300,
    device: str = "cpu",
) -> dict[str, float]:
    """Score a frozen backbone on held-out scenes (``val`` to fit, ``test`` to score) with each
    protocol; percentages, one headline figure per protocol."""
    from densessl.data.synthetic import SyntheticScenes
    from densessl.data.synthetic_sets import LargestObjectScenes, PresenceScenes
    from densessl.eval.classification import run_knn, run_svm_voc07
    from densessl.eval.clustering import run_clustering
    from densessl.eval.retrieval import evaluate_nn
    from densessl.eval.segmentation import extract_features, probe_features

    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    size, classes = scenes.image_size, scenes.num_classes + 1
    scores: dict[str, float] = {}
    if {"linear", "nn", "cluster"} & set(protocols):
        train_f, train_m = extract_features(
            backbone, SyntheticScenes(scenes, "val", probe_train), size, 64, device
        )
        test_f, test_m = extract_features(
            backbone, SyntheticScenes(scenes, "test", probe_test), size, 64, device
        )
        if "linear" in protocols:
            probe = probe_features(
                train_f, train_m, test_f, test_m, classes, head="linear", seeds=(0, 1, 2), epochs=30,
                lr=0.1, batch_size=64, train_resolution=size // 2, device=device,
            )  # fmt: skip
            scores["linear"] = 100 * probe["miou"]
        if "nn" in protocols:
            scores["nn"] = 100 * evaluate_nn(train_f, train_m, test_f, test_m, classes, device=device)["miou"]
        if "cluster" in protocols:
            clusters = run_clustering(test_f, test_m, classes, clusters=[classes], seeds=(0, 1, 2))
            scores["cluster"] = 100 * clusters["clusterings"][0]["miou"]
    if "svm" in protocols:
        train, test = PresenceScenes(scenes, "val", probe_train), PresenceScenes(scenes, "test", probe_test)
        svm = run_svm_voc07(
            backbone, train, test, image_size=size, device=device, class_names=train.class_names
        )
        scores["svm"] = svm["map"]
    if "knn" in protocols:
        train, test = (
            LargestObjectScenes(scenes, "val", probe_train),
            LargestObjectScenes(scenes, "test", probe_test),
        )
        scores["knn"] = run_knn(backbone, train, test, image_size=size, device=device)["top1"]
    return scores


# -- the runs ---------------------------------------------------------------------------------------
def _seconds_per_epoch(name: str, out: Path, settings: CompareSettings) -> float:
    """Time the second window of the calibration steps (the first warms up) for one epoch."""
    from densessl.training.trainer import Trainer

    steps = settings.calibration_steps
    extra = [f"train.max_steps={2 * steps}", f"train.log_every={steps}", "train.tensorboard=false"]
    extra.append("train.probe.every_epochs=0")  # its lines carry no throughput
    config = recipe_config(name, settings, [*extra, "train.progress=false"])
    Trainer(config, out, resume="auto-or-new").fit()
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return config.data.synthetic_length / last["images_per_s"]


def plan_epochs(settings: CompareSettings, out: Path) -> dict[str, dict[str, float]]:
    """Steps (and the epochs they make) per method for ``settings.minutes`` of pre-training, kept
    in ``plan.json``; with ``settings.whole_epochs`` whole epochs alone, as plans before steps."""
    plan_file = out / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
    for method in settings.methods:
        if method in plan:
            continue
        config = recipe_config(method, settings)
        steps_per_epoch = config.data.synthetic_length // config.train.batch_size
        # a variant's own step time, else its method's (an lr does not change a step's cost)
        step_ms = settings.step_ms.get(method, settings.step_ms.get(split_variant(method)[0]))
        if step_ms is not None:
            epoch_s, how = step_ms * steps_per_epoch / 1000, "given step time"
        else:
            log.info("compare: timing %s for %d steps", method, 2 * settings.calibration_steps)
            epoch_s = _seconds_per_epoch(method, out / f"calibrate_{_folder_safe(method)}", settings)
            how = "timed here"
        # the guard keeps a budget of exactly N steps whose product lands a hair under N from N - 1
        steps = max(1, math.floor(settings.minutes * 60 / epoch_s * steps_per_epoch + 1e-6))
        entry: dict[str, Any] = {"seconds_per_epoch": epoch_s, "source": how}
        if settings.whole_epochs:
            entry["epochs"] = max(1, steps // steps_per_epoch)
        else:
            entry.update(steps=steps, epochs=round(steps / steps_per_epoch, 4))
        plan[method] = entry
        plan_file.write_text(json.dumps(plan, indent=2))
        log.info(
            "compare: %s %.1f s per epoch (%s) -> %s steps, %g epochs",
            method,
            epoch_s,
            how,
            entry.get("steps", entry["epochs"] * steps_per_epoch),
            entry["epochs"],
        )
    return plan


def _is_vit(name: str) -> bool:
    from densessl.config import load_config
    from densessl.demo import quick_config_path

    method, variant = split_variant(name)
    return str(load_config(quick_config_path(method), variant).model.arch).startswith("vit")


def _floor_method(methods: Sequence[str]) -> str:
    """The ResNet method (without a variant's overrides) whose recipe defines the floor's and the
    ceiling's backbone."""
    for method in [*methods, "mocov2"]:
        if not _is_vit(method):
            return split_variant(method)[0]
    return "mocov2"


def train_ceiling(
    config: Any, scenes: Any, epochs: int, seed: int, device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """The supervised ceiling of a recipe's ``config``: its backbone, from the weights pre-training
    would start from, trained with per-pixel cross-entropy on the pre-training scenes, with the
    first view's crops, the recipe's batch and precision; returns it and the training record."""
    import torch

    from densessl.demo import initial_backbone
    from densessl.eval.supervised import train_supervised
    from densessl.training.trainer import resolve_precision

    return train_supervised(
        initial_backbone(config),
        scenes,
        images=config.data.synthetic_length,
        epochs=epochs,
        crop_size=config.views[0].crop.size,
        crop_scale=tuple(config.views[0].crop.scale),
        batch_size=config.train.batch_size,
        seed=seed,
        device=device,
        autocast_dtype=resolve_precision(config.train.precision, torch.device(device)),
    )


def _one_run(
    name: str, seed: int, settings: CompareSettings, plan: dict[str, dict[str, float]], out: Path
) -> dict[str, Any]:
    from densessl.data.synthetic import resolve_config
    from densessl.demo import initial_backbone, synthetic_preset
    from densessl.export import load_backbone
    from densessl.training.trainer import Trainer

    device = settings.device or "cpu"
    result_file = out / run_directory_name(name, seed) / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    if name == VIT_FLOOR:
        recipe = "mgc"
    elif name in (FLOOR, CEILING):
        recipe = _floor_method(settings.methods)
    else:
        recipe = name
    extra = [f"train.seed={seed}"]
    if settings.init_seed is not None:
        extra.append(f"train.init_seed={settings.init_seed}")
    if name in plan:
        # plans written before steps, and whole-epoch plans, hold epochs alone
        length = plan[name]
        key = "steps" if "steps" in length else "epochs"
        extra.append(f"train.{key}={length[key]}")
    config = recipe_config(recipe, settings, extra)
    scenes = resolve_config(synthetic_preset(config.data.source))
    started = time.perf_counter()
    record: dict[str, Any] = {
        "method": name,
        "seed": seed,
        "init_seed": config.train.init_seed,
        "recipe": recipe,
        "arch": config.model.arch,
    }
    if name in (FLOOR, VIT_FLOOR):
        backbone = initial_backbone(config)
    elif name == CEILING:
        backbone, trained = train_ceiling(config, scenes, settings.supervised_epochs, seed, device)
        record["supervised"] = {k: v for k, v in trained.items() if k != "losses"}
        record["supervised"]["final_loss"] = trained["losses"][-1]
    else:
        summary = Trainer(config, result_file.parent / "pretrain", resume="auto-or-new").fit()
        backbone = load_backbone(summary["checkpoint"])
        record["steps"] = summary["total_steps"]
        record["epochs"] = plan[name]["epochs"] if name in plan else config.train.epochs
        record["final_loss"] = summary.get("last_metrics", {}).get("loss")
    record["train_minutes"] = (time.perf_counter() - started) / 60
    log.info("compare: probing %s seed %d", name, seed)
    probe_started = time.perf_counter()
    record["scores"] = evaluate_backbone(
        backbone.eval(), scenes, settings.protocols, settings.probe_train, settings.probe_test, device
    )
    record["probe_minutes"] = (time.perf_counter() - probe_started) / 60
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(record, indent=2))
    log.info("compare: %s seed %d: %s", name, seed, json.dumps(record["scores"]))
    return record


#: in a process of a ``--jobs`` pool: a stop was asked for, so it starts no other run; and
#: whether a run is under way (a stop abandons its probes: they are redone next time)
_stopping = False
_in_run = False
#: the comparison's process, which a pool process outlives only when it was killed
_parent = 0


def _orphaned() -> bool:
    return bool(_parent) and os.getppid() != _parent


def _stop_request(signum: int, frame: Any) -> None:
    """A pool process's SIGINT and SIGTERM outside training (the trainer handles them during it)."""
    global _stopping
    # a second signal (a scheduler's beside the one passed on) asks for the same stop
    already, _stopping = _stopping, True
    if _in_run:
        if not already:
            raise KeyboardInterrupt
    elif _orphaned():  # waiting for a run that no one will send
        os._exit(130)


def _end_with_parent() -> None:
    """Linux: have this process sent SIGTERM when the process that started it ends, however it
    ends (even SIGKILL), so that no run outlives its comparison."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _start_job(threads: int, log_level: int) -> None:
    """Set up one process of a ``--jobs`` pool: its share of the cores, logging, and stops."""
    import torch

    global _parent
    _parent = os.getppid()
    _end_with_parent()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_request)
    # out of the terminal's process group: a Ctrl-C reaches the comparison alone, which passes it
    # on once, as it does a ``kill -INT`` or a SIGTERM sent to it alone
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)

    # through the environment too, so that the trainer's own thread choice leaves it in place
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s [job %(process)d]: %(message)s")
    logging.getLogger().setLevel(log_level)


def _numbered_run(
    number: int, total: int, seed: int, name: str, settings: CompareSettings, plan: dict, out: Path
) -> dict[str, Any]:
    global _stopping, _in_run
    if _stopping:
        raise KeyboardInterrupt  # queued before the stop: not started
    log.info("compare: run %d of %d: %s, seed %d", number, total, name, seed)
    _in_run = True
    try:
        return _one_run(name, seed, settings, plan, out)
    except KeyboardInterrupt:
        _stopping = True
        if _orphaned():  # the run has saved; there is no one to report to
            os._exit(130)
        raise
    finally:
        _in_run = False


def threads_per_job(jobs: int) -> int:
    """CPU threads for each of ``jobs`` runs side by side: the cores shared out, at least one."""
    from densessl.runtime import available_cores

    return max(1, available_cores() // jobs)


def _run_all(
    runs: list[tuple[int, str]], settings: CompareSettings, plan: dict[str, dict[str, float]], out: Path
) -> list[dict[str, Any]]:
    """Every (seed, name) run, one after the other or ``settings.jobs`` at a time.

    Runs of a pool are independent processes with ``cores // jobs`` threads each (one each on 2
    cores): the convolutions of a small backbone use one core well and two poorly, so two runs
    side by side finish sooner than the same two one after the other. A failed run stops the
    comparison with its error once the runs under way end; finished runs stay on disk and are
    read back next time."""
    numbered = [(i, len(runs), seed, name, settings, plan, out) for i, (seed, name) in enumerate(runs, 1)]
    if settings.jobs <= 1:
        return [_numbered_run(*args) for args in numbered]
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    threads = threads_per_job(settings.jobs)
    log.info("compare: %d runs at a time, %d CPU thread(s) each", settings.jobs, threads)
    level = logging.getLogger().getEffectiveLevel()
    pool = ProcessPoolExecutor(
        settings.jobs,
        mp_context=multiprocessing.get_context("spawn"),  # a fresh interpreter, no forked torch state
        initializer=_start_job,
        initargs=(threads, level),
    )

    def stop_runs(signum: int, frame: Any) -> None:
        # the pool's processes have process groups of their own (see _start_job): pass it on
        for child in multiprocessing.active_children():
            with contextlib.suppress(OSError):
                os.kill(child.pid, signum)
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, stop_runs) for signum in stops} if main_thread else {}
    try:
        futures = [pool.submit(_numbered_run, *args) for args in numbered]
        return [future.result() for future in futures]
    except KeyboardInterrupt:
        log.warning(
            "compare: stopping; the runs under way save where they are, and the same command "
            "continues the comparison"
        )
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # waits for those saves
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_compare(settings: CompareSettings, out: str | Path) -> dict[str, Any]:
    """Plan, run (resuming), summarise and write the comparison into ``out``."""
    from densessl.eval.report import bar_chart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(settings.protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    started = time.perf_counter()
    plan = plan_epochs(settings, out)
    names = list(settings.methods) + [FLOOR]
    if settings.supervised_epochs > 0:
        names.append(CEILING)
    if any(_is_vit(m) for m in settings.methods):
        names.append(VIT_FLOOR)
    results = _run_all(list(itertools.product(settings.seeds, names)), settings, plan, out)
    for record in results:  # runs written before records named their architecture
        if "arch" not in record and "recipe" in record:
            record["arch"] = recipe_config(record["recipe"], settings).model.arch
    summary = {
        "settings": {k: v for k, v in vars(settings).items()},
        "plan": plan,
        "runs": results,
        **summarise(results, settings.protocols),
        "wall_minutes_this_call": (time.perf_counter() - started) / 60,
    }
    summary["compute_minutes"] = sum(r.get("train_minutes", 0) + r.get("probe_minutes", 0) for r in results)
    summary["scenes"] = _scene_statistics(settings)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(markdown_tables(summary, settings.protocols))
    means = {m: {p: c["mean"] for p, c in cells.items()} for m, cells in summary["methods"].items()}
    errors = {
        m: {p: c["ci_high"] - c["mean"] for p, c in cells.items()} for m, cells in summary["methods"].items()
    }
    bar_chart(_protocol_columns(means), out / "compare.png", errors=_protocol_columns(errors))
    return summary


def _scene_statistics(settings: CompareSettings) -> dict[str, Any]:
    """What the scenes ask of dense features (:mod:`densessl.eval.scenes`), with the first
    method's views."""
    from densessl.demo import synthetic_preset
    from densessl.eval.scenes import scene_statistics

    config = recipe_config(settings.methods[0], settings)
    return scene_statistics(synthetic_preset(config.data.source), [v.crop for v in config.views])


def _protocol_columns(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {method: {PROTOCOLS[p]: v for p, v in row.items()} for method, row in table.items()}

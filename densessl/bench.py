"""What a recipe costs on this machine, and the loader workers and CPU threads to run it with.

:func:`run_bench` measures four things for one resolved config, each in its own phase:

- **loader**: images per second out of the DataLoader alone (decoding, crops, view targets,
  collation), for a few worker counts, in total and per worker; a synthetic source is measured
  as in its first epoch, rendering every scene (later epochs read them from its cache);
- **step**: one training step on a fixed batch (photometric augmentation, forward, loss,
  backward, optimiser step), in ms and images per second, the FLOPs of a step
  (:class:`torch.utils.flop_counter.FlopCounterMode`) and the TFLOP/s they come to; on CUDA also
  the model FLOP utilisation against the device's peak where :data:`PEAK_TFLOPS` knows it;
- **loop**: the trainer itself for a few dozen steps in a temporary directory, its images per
  second and the fraction of the time it waited for data (from its ``metrics.jsonl``);
- **augment**: each photometric op of each view's pipeline timed alone on the fixed batch, and
  its share of their sum.

:func:`recommend` turns the measurements into worker and thread settings; it is a pure function.
The measuring helpers (:func:`timed`, :func:`fixed_batch`, :func:`build_dataset`,
:func:`loader_images_per_s`) are shared with the scripts in ``benchmarks/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from densessl.config import ExperimentConfig, ViewConfig
from densessl.errors import ConfigError
from densessl.runtime import choose_cpu_threads

log = logging.getLogger(__name__)

#: dense peak TFLOP/s of known GPUs (substring of the device name -> {dtype: peak}), from the
#: vendors' data sheets; tensor-core figures for bf16/fp16, plain fp32 otherwise
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6},
    "A10G": {"bf16": 70.0, "fp16": 70.0, "fp32": 31.2},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}
#: a loader counts for its rate divided by this: its rate varies from batch to batch, and the
#: step must not wait
LOADER_MARGIN = 1.2


# -- measuring helpers --------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so that wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], iters: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of ``fn`` over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def fixed_batch(config: ExperimentConfig, batch: int, seed: int = 0) -> dict[str, Any]:
    """A collated batch of random uint8 crops shaped as ``config``'s views produce them, without
    per-sample view targets (:func:`add_view_targets` adds them)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [v.crop.size for v in config.views]
    top = max(sizes)
    return {
        "crops": [torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g) for s in sizes],
        # overlapping boxes (each view shifted by a quarter) so that methods that align views
        # (SlotCon, DenseCL's matching) do real work
        "boxes": torch.tensor([[i * top // 4, 0, top, top] for i in range(len(sizes))])
        .expand(batch, -1, -1)
        .clone(),
        "flips": torch.zeros(batch, len(sizes), dtype=torch.bool),
        "image_sizes": torch.full((batch, 2), 2 * top),
        "accepted": torch.ones(batch, len(sizes), dtype=torch.bool),
        "references": [v.crop.reference for v in config.views],
        "targets": {},
        "skipped": 0,
        "unreadable": [],
    }


def add_view_targets(batch_data: dict[str, Any], config: ExperimentConfig) -> None:
    """Fill ``batch_data["targets"]`` with the method's per-sample view targets, if it has any."""
    from densessl.methods import METHODS
    from densessl.views.geometry import Box, ViewRecord

    targets_fn = METHODS[config.method.name].view_targets(config)
    if targets_fn is None:
        return
    sizes = [v.crop.size for v in config.views]
    image_size = tuple(int(s) for s in batch_data["image_sizes"][0].tolist())
    samples = []
    for b in range(batch_data["crops"][0].shape[0]):
        boxes, flips = batch_data["boxes"][b].tolist(), batch_data["flips"][b].tolist()
        records = [
            ViewRecord(Box(*box), flip, (s, s)) for box, flip, s in zip(boxes, flips, sizes, strict=True)
        ]
        samples.append(targets_fn(records, image_size))
    batch_data["targets"] = {k: torch.stack([t[k] for t in samples]) for k in samples[0]}


def build_dataset(
    config: ExperimentConfig, min_length: int = 0, seed: int = 0, device: torch.device | None = None
):
    """The trainer's dataset for ``config`` (source, view sampler, the method's view targets); a
    synthetic source gets at least ``min_length`` images. With a ``device``, JPEGs are left to it
    where ``data.decode`` says so, as the trainer does."""
    from densessl.data.sources import parse_source
    from densessl.methods import METHODS
    from densessl.training.trainer import decodes_on_device
    from densessl.views.dataset import MultiViewDataset
    from densessl.views.sampler import ViewSampler

    return MultiViewDataset(
        parse_source(config.data.source, length=max(config.data.synthetic_length, min_length)),
        ViewSampler([v.crop for v in config.views]),
        seed=seed,
        corrupt=config.data.corrupt,
        max_skipped_fraction=config.data.max_skipped_fraction,
        targets=METHODS[config.method.name].view_targets(config),
        defer_jpeg=device is not None and decodes_on_device(config.data.decode, device),
    )


def make_loader(dataset, batch: int, workers: int, seed: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` set up as the trainer's (one process, one epoch)."""
    from densessl.training.interrupt import quiet_worker
    from densessl.views.dataset import EpochBatchSampler, collate_views

    return DataLoader(
        dataset,
        batch_sampler=EpochBatchSampler(len(dataset), batch, 1, 0, seed=seed, epochs=1),
        collate_fn=collate_views,
        num_workers=workers,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=quiet_worker if workers > 0 else None,
    )


def timed_batches(loader: DataLoader, batches: int, warmup: int = 1) -> Iterator[tuple[dict, float]]:
    """``(batch, seconds waited for it)`` for ``batches`` batches of ``loader`` after ``warmup``
    (which take the workers' start-up); the workers end with the iteration."""
    iterator = iter(loader)
    try:
        for _ in range(warmup):
            next(iterator)
        for _ in range(batches):
            start = time.perf_counter()
            collated = next(iterator)
            yield collated, time.perf_counter() - start
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def loader_images_per_s(
    dataset, batch: int, workers: int, batches: int, device: torch.device | None = None
) -> float:
    """Images per second the loader delivers with ``workers`` processes (0: in this process),
    once started, when nothing else is waiting on it. JPEGs left to the device are decoded and
    cropped on ``device``, and that time counts as the loader's."""
    from densessl.views.deferred import complete_views

    images = seconds = 0.0
    for collated, waited in timed_batches(make_loader(dataset, batch, workers), batches):
        if collated["deferred"]:
            started = time.perf_counter()
            complete_views(collated, dataset.sampler, device or torch.device("cpu"))
            synchronize(device or torch.device("cpu"))
            waited += time.perf_counter() - started
        images += collated["crops"][0].shape[0]
        seconds += waited
    return images / max(seconds, 1e-9)


# -- the recommendation -------------------------------------------------------------------------
@dataclass(frozen=True)
class Recommendation:
    workers: int
    threads: int
    #: the end-to-end rate the measurements predict for these workers
    images_per_s: float
    reason: str


def expected_images_per_s(workers: int, loader_per_s: float, step_per_s: float) -> float:
    """The end-to-end rate to expect from a loader and a step measured alone: without workers the
    main process loads and then steps (the times add up); workers load while the step runs, and
    a loader counts only for what it gives beyond :data:`LOADER_MARGIN` (its rate varies from
    batch to batch, and the step must not wait)."""
    if workers == 0:
        return 1.0 / (1.0 / loader_per_s + 1.0 / step_per_s)
    return min(loader_per_s / LOADER_MARGIN, step_per_s)


def recommend(
    loader_per_s: dict[int, float], step_per_s: float, cores: int, device_type: str = "cpu"
) -> Recommendation:
    """Loader workers and main-process threads for a recipe, from its measurements.

    ``loader_per_s``: images/s of the loader alone by worker count; ``step_per_s``: images/s of
    the training step alone. The fewest workers whose expected rate
    (:func:`expected_images_per_s`) is within 5% of the best; on a CPU device at most
    ``cores - 1`` (the step needs a core of its own: the workers take theirs from it), so none
    on one core. Threads: :func:`densessl.runtime.choose_cpu_threads` for those workers.
    """
    if not loader_per_s or min(loader_per_s.values()) <= 0:
        raise ValueError(f"recommend needs loader measurements above 0 images/s, got {loader_per_s}")
    if step_per_s <= 0:
        raise ValueError(f"the step's images/s must be positive, got {step_per_s}")
    limit = max(0, cores - 1) if device_type == "cpu" else max(loader_per_s)
    allowed = [w for w in sorted(loader_per_s) if w <= limit] or [min(loader_per_s)]
    expected = {w: expected_images_per_s(w, loader_per_s[w], step_per_s) for w in allowed}
    best = max(expected.values())
    workers = next(w for w in allowed if expected[w] >= 0.95 * best)
    plural = "s" if workers != 1 else ""
    if workers == 0 and expected[0] >= 0.95 * step_per_s:
        reason = f"loading in the main process ({loader_per_s[0]:.0f} images/s) barely slows the step"
    elif expected[workers] >= 0.95 * step_per_s:
        reason = (
            f"{workers} worker{plural} deliver{'' if plural else 's'} "
            f"{loader_per_s[workers]:.0f} images/s, more than the step's {step_per_s:.0f}"
        )
    else:
        reason = (
            f"the loader limits the run: {workers} worker{plural} give about {expected[workers]:.0f} "
            f"images/s end to end against the step's {step_per_s:.0f}"
        )
    beyond = [w for w in loader_per_s if w > limit]
    if any(expected_images_per_s(w, loader_per_s[w], step_per_s) > expected[workers] for w in beyond):
        reason += f" (at most {limit} on {cores} core{'s' if cores != 1 else ''}: the step needs one)"
    return Recommendation(workers, choose_cpu_threads(cores, workers), expected[workers], reason)


# -- the phases ---------------------------------------------------------------------------------
def measure_loader(
    config: ExperimentConfig, workers: list[int], batches: int, device: torch.device | None = None
) -> dict[str, Any]:
    """Phase (a): the loader alone, at each worker count (JPEGs decoded where the trainer on
    ``device`` would decode them)."""
    batch = config.train.batch_size
    rows = []
    for w in workers:
        # a fresh dataset each time: a synthetic source keeps what it rendered, and the next
        # count would otherwise read the first one's images from memory
        dataset = build_dataset(config, min_length=batch * (batches + 1), device=device)
        rate = loader_images_per_s(dataset, batch, w, batches, device)
        rows.append({"workers": w, "images_per_s": rate, "images_per_s_per_worker": rate / max(w, 1)})
    return {"batch": batch, "batches": batches, "runs": rows}


def peak_tflops(device_name: str, dtype: torch.dtype | None) -> float | None:
    """The device's dense peak for the step's precision, when :data:`PEAK_TFLOPS` knows it."""
    key = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_name:
            return peaks.get(key)
    return None


def build_train_step(
    config: ExperimentConfig, device: torch.device, batch_data: dict[str, Any]
) -> Callable[[], None]:
    """One full training step of ``config``'s method on ``batch_data``, as the trainer runs it."""
    from densessl.methods import Step
    from densessl.training.optim import build_optimizer
    from densessl.training.trainer import build_model, prepare_views, resolve_precision

    torch.manual_seed(config.train.seed)
    method = build_model(config).to(device)
    if config.train.channels_last:
        method.to(memory_format=torch.channels_last)
    method.train()
    optimizer = build_optimizer(method.param_groups() or method, config.optim)
    dtype = resolve_precision(config.train.precision, device)
    counter = [0]

    def train_step() -> None:
        step = counter[0]
        views = prepare_views(
            batch_data, config.views, torch.Generator().manual_seed(step), device, config.train.channels_last
        )
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = method(views, Step(step, 1000, 0, torch.Generator().manual_seed(step)))
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        counter[0] += 1

    return train_step


def count_flops(fn: Callable[[], Any]) -> float:
    """The floating-point operations of one call of ``fn``, as
    :class:`torch.utils.flop_counter.FlopCounterMode` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def measure_step(config: ExperimentConfig, device: torch.device, iters: int) -> dict[str, Any]:
    """Phase (b): the training step alone on a fixed batch."""
    from densessl.training.trainer import resolve_precision

    batch = config.train.batch_size
    batch_data = fixed_batch(config, batch)
    add_view_targets(batch_data, config)
    step = build_train_step(config, device, batch_data)
    ms = timed(step, iters, warmup=1, device=device)
    result: dict[str, Any] = {"batch": batch, "iters": iters, "ms": ms, "images_per_s": batch / ms * 1000}
    # the FLOPs of one more step, counted op by op (matmuls, convolutions, their gradients)
    flops = count_flops(step)
    achieved = flops / (ms / 1000) / 1e12
    result.update(tflop_per_step=flops / 1e12, achieved_tflops=achieved)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = peak_tflops(name, resolve_precision(config.train.precision, device))
        result.update(device_name=name, peak_tflops=peak, mfu=achieved / peak if peak else None)
    return result


def measure_loop(config: ExperimentConfig, steps: int, warmup: int) -> dict[str, Any]:
    """Phase (c): the trainer for ``warmup + steps`` steps in a temporary directory; the warm-up
    window (workers starting, first allocations) is left out of the figures."""
    from densessl.training.trainer import Trainer

    config = dataclasses.replace(
        config,
        train=dataclasses.replace(
            config.train,
            max_steps=warmup + steps,
            log_every=warmup,
            tensorboard=False,
            progress=False,
            # no epoch checkpoint inside the measured steps
            checkpoint_every=10**6,
            checkpoint_every_steps=0,
            # the online probe's time is not the loop's
            probe=dataclasses.replace(config.train.probe, every_epochs=0),
        ),
    )
    with tempfile.TemporaryDirectory(prefix="densessl-bench-") as tmp:
        run_dir = Path(tmp)
        Trainer(config, run_dir).fit()
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # each record covers the steps since the one before; the first is the warm-up
    seconds = wait = images = 0.0
    previous = records[0]["step"]
    for record in records[1:]:
        n = (record["step"] - previous) * config.train.batch_size
        previous = record["step"]
        elapsed = n / record["images_per_s"]
        images += n
        seconds += elapsed
        wait += record["data_wait_fraction"] * elapsed
    if not seconds:
        raise ValueError("the loop ran no step after its warm-up: the dataset is smaller than the run")
    return {
        "steps": int(images // config.train.batch_size),
        "workers": config.data.workers,
        "threads": torch.get_num_threads(),
        "images_per_s": images / seconds,
        "data_wait_fraction": wait / seconds,
    }


def pipeline_ops(
    pipeline: Any, batch: int, prefix: str
) -> list[tuple[str, int, Callable[[torch.Tensor, torch.Generator], torch.Tensor], bool]]:
    """The ops of a photometric pipeline, each as ``(name, images it sees, fn, takes uint8)``.

    A colour step is split into its ops (jitter, grayscale, blur, solarize), each run by the
    colour step with the other probabilities at 0, so that it sees the share of samples it
    would; a choice's branch sees the share of the batch its weight gives it.
    """
    from densessl.augment import AutoAugmentConfig, PhotometricChoice, PhotometricConfig
    from densessl.augment.autoaugment import apply_autoaugment
    from densessl.augment.colour import apply_photometric

    if isinstance(pipeline, list | tuple):
        ops = []
        for i, step in enumerate(pipeline):
            ops.extend(pipeline_ops(step, batch, f"{prefix}{i}."))
        return ops
    if isinstance(pipeline, AutoAugmentConfig):
        policy = pipeline.autoaugment
        return [(f"{prefix}autoaugment", batch, lambda x, g: apply_autoaugment(x, g, policy), True)]
    if isinstance(pipeline, PhotometricChoice):
        ops = []
        for i, (branch, weight) in enumerate(zip(pipeline.choice, pipeline.weights(), strict=True)):
            share = round(batch * weight)
            if share:
                ops.extend(pipeline_ops(branch, share, f"{prefix}choice{i}."))
        return ops
    if isinstance(pipeline, PhotometricConfig):
        probabilities = ("jitter_p", "grayscale_p", "blur_p", "solarize_p")
        ops = []
        for field in probabilities:
            if getattr(pipeline, field) <= 0:
                continue
            alone = dataclasses.replace(pipeline, **{p: 0.0 for p in probabilities if p != field})
            ops.append(
                (
                    f"{prefix}{field[:-2]}",
                    batch,
                    lambda x, g, alone=alone: apply_photometric(x, alone, g),
                    False,
                )
            )
        return ops
    raise TypeError(f"not a photometric pipeline step: {pipeline!r}")


def measure_augment(
    views: list[ViewConfig], batch_data: dict[str, Any], device: torch.device, iters: int
) -> dict[str, Any]:
    """Phase (d): each photometric op of each view timed alone, and its share of their sum."""
    from densessl.augment import augment_view
    from densessl.augment.colour import normalize

    rows = []
    whole = 0.0
    for v, (view, crops) in enumerate(zip(views, batch_data["crops"], strict=True)):
        crops = crops.to(device)
        floats = crops.float().div_(255.0)
        generator = torch.Generator().manual_seed(v)
        ops = pipeline_ops(view.photometric, crops.shape[0], f"view{v}.")
        ops.append((f"view{v}.normalize", crops.shape[0], lambda x, g: normalize(x), False))
        for name, n, fn, takes_uint8 in ops:
            images = (crops if takes_uint8 else floats)[:n]
            ms = timed(lambda fn=fn, x=images, g=generator: fn(x, g), iters, 1, device)
            rows.append({"op": name, "images": n, "ms": ms})
        pipeline = view.photometric
        whole += timed(lambda x=crops, p=pipeline, g=generator: augment_view(x, p, g), iters, 1, device)
    total = sum(r["ms"] for r in rows)
    for row in rows:
        row["share"] = row["ms"] / total if total else 0.0
    return {"ms": whole, "ops_ms": total, "ops": rows}


def _progress(message: str) -> None:
    log.info("bench: %s", message)


def run_bench(
    config: ExperimentConfig,
    workers: list[int],
    steps: int = 16,
    batches: int = 4,
    device: torch.device | None = None,
    cores: int | None = None,
) -> dict[str, Any]:
    """All four phases for ``config`` and the settings they recommend, as one JSON-ready dict.

    ``workers``: the loader's worker counts to measure; ``steps``: steps of the full loop (the
    step alone is timed for a quarter of them, at least 3); ``batches``: loader batches per
    worker count, after one that takes the workers' start-up.
    """
    from densessl.runtime import available_cores

    if steps < 1 or batches < 1:
        raise ConfigError(f"--steps and --batches must be at least 1, got {steps} and {batches}")
    if not workers or min(workers) < 0:
        raise ConfigError(f"--workers takes worker counts >= 0, got {workers}")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cores = cores or available_cores()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "recipe": config.method.name,
        "device": str(device),
        "cores": cores,
        "threads": torch.get_num_threads(),
        "batch": config.train.batch_size,
    }

    _progress(f"loader alone, {batches} batches of {config.train.batch_size} with {workers} workers")
    report["loader"] = measure_loader(config, workers, batches, device)
    for row in report["loader"]["runs"]:
        _progress(
            f"  {row['workers']} workers: {row['images_per_s']:.1f} images/s "
            f"({row['images_per_s_per_worker']:.1f} per worker)"
        )

    iters = max(3, steps // 4)
    _progress(f"training step alone, {iters} steps on a fixed batch on {device}")
    report["step"] = measure_step(config, device, iters)
    step = report["step"]
    line = f"  {step['ms']:.1f} ms per step, {step['images_per_s']:.1f} images/s"
    line += f", {step['achieved_tflops']:.3g} TFLOP/s"
    if step.get("mfu") is not None:
        line += f", MFU {100 * step['mfu']:.1f}% of {step['peak_tflops']:g}"
    _progress(line)

    warmup = max(2, steps // 4)
    _progress(f"full loop, {steps} steps after {warmup} warm-up, {config.data.workers} workers")
    report["loop"] = measure_loop(config, steps, warmup)
    loop = report["loop"]
    _progress(
        f"  {loop['images_per_s']:.1f} images/s, waiting for data {100 * loop['data_wait_fraction']:.0f}% "
        f"of the time ({loop['workers']} workers, {loop['threads']} threads)"
    )

    _progress(f"photometric ops alone, {iters} repeats")
    batch_data = fixed_batch(config, config.train.batch_size)
    report["augment"] = measure_augment(config.views, batch_data, device, iters)
    for row in report["augment"]["ops"]:
        _progress(f"  {row['op']:28s} {row['ms']:8.2f} ms  {100 * row['share']:5.1f}%")

    rec = recommend(
        {r["workers"]: r["images_per_s"] for r in report["loader"]["runs"]},
        step["images_per_s"],
        cores,
        device.type,
    )
    report["recommended"] = dataclasses.asdict(rec)
    report["seconds"] = time.perf_counter() - started
    return report

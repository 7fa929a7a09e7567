"""The pre-training loop: one code path for one CPU, one GPU or many processes under torchrun.

The trainer knows methods only through :mod:`densessl.methods.base`: it builds the configured
one, feeds it :class:`Views`, minimises the ``loss`` it returns and logs every other scalar.

What a run promises:

- A stop request (SIGTERM from a scheduler or from torchrun, Ctrl-C) is honoured between two
  steps, never inside one: the step in flight finishes (teacher update, queue push, optimiser
  step), every process agrees on the same last step, the checkpoint is written under that step's
  number and the run exits. Signals that arrive while stopping only say that it is stopping.
- The run history matches the checkpoint: on resume, ``metrics.jsonl`` and TensorBoard drop
  everything logged after the checkpoint's step, so no step appears twice.
- A run directory that already holds a run is continued only with ``--resume``, replaced only
  with ``--overwrite``; a resume whose config differs in anything that changes the mathematics
  stops with one line naming the keys.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from densessl import distributed as dist
from densessl.augment import augment_view
from densessl.config import ExperimentConfig, ViewConfig, save_config, to_dict
from densessl.data.sources import parse_source
from densessl.errors import DataError, TrainingError
from densessl.methods import Method, Step, Views, build_method
from densessl.models.backbones import ResNetBackbone, build_backbone
from densessl.runtime import configure_cpu_threads
from densessl.training.checkpoint import (
    FORMAT,
    LAST,
    CheckpointError,
    checkpoint_candidates,
    copy_atomic,
    describe_os_error,
    find_resume_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    rng_state,
    save_atomic,
    state_digest,
)
from densessl.training.history import MetricsWriter, open_run_log
from densessl.training.interrupt import StopRequest, quiet_worker
from densessl.training.ledger import build_ledger
from densessl.training.monitor import CollapseMonitor
from densessl.training.optim import Schedule, build_optimizer, clip_gradients
from densessl.training.probe import OnlineProbe
from densessl.views.dataset import (
    EpochBatchSampler,
    MultiViewDataset,
    check_skip_budget,
    collate_views,
    derive_seed,
)
from densessl.views.deferred import complete_views
from densessl.views.sampler import ViewSampler

log = logging.getLogger(__name__)

#: ``resume`` value that continues a run when it has a checkpoint and starts one otherwise
RESUME_OR_NEW = "auto-or-new"
#: config keys a resumed run may change: they affect bookkeeping, not the mathematics
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.checkpoint_every_steps",
    "train.tensorboard",
    "train.progress",
    "train.precision",
    "train.collective_timeout_s",
    "train.cpu_threads",
    "train.compile",
    "train.compile_backend",
    "train.probe",
    "data.source",
    "data.workers",
    "data.decode",
    "data.corrupt",
    "data.max_skipped_fraction",
)
#: what a run writes into its directory (``--overwrite`` removes exactly these)
RUN_FILES = ("metrics.jsonl", "config.yaml", "run.log", "eval.jsonl")
RUN_FOLDERS = ("checkpoints", "tensorboard")


def build_model(config: ExperimentConfig) -> Method:
    """The configured method with its backbone (same initialisation for the same seed).

    The method's backbone factory takes ``model`` fields as overrides, so a method can build its
    momentum teacher with other arguments (``drop_path_rate=0.0``).
    """

    def backbone_factory(**overrides: Any):
        return build_backbone(**config.model.backbone_kwargs(**overrides))

    return build_method(config.method, backbone_factory)


def prepare_views(
    batch: dict[str, Any],
    views: list[ViewConfig],
    generator: torch.Generator,
    device: torch.device,
    channels_last: bool,
) -> Views:
    """Move a collated batch to ``device`` and run each view's photometric augmentation there.

    Views left to device decoding are decoded and cropped first (:mod:`densessl.views.deferred`).
    """
    if batch.get("deferred"):
        complete_views(batch, ViewSampler([v.crop for v in views]), device)
    images = []
    for crops, view in zip(batch["crops"], views, strict=True):
        x = augment_view(crops.to(device, non_blocking=True), view.photometric, generator)
        images.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return Views(
        images=images,
        boxes=batch["boxes"].to(device),
        flips=batch["flips"].to(device),
        image_sizes=batch["image_sizes"].to(device),
        accepted=batch["accepted"].to(device),
        references=tuple(batch["references"]),
        targets={k: v.to(device, non_blocking=True) for k, v in batch["targets"].items()},
    )


def compile_backbones(method: nn.Module, backend: str = "inductor") -> int:
    """``torch.compile`` every backbone of ``method`` in place (``nn.Module.compile``): the heads,
    queues and teacher updates stay eager, where Python control flow would break the graph, and
    parameter names do not change. Returns the number of backbones compiled."""
    from densessl.models.vit import ViTBackbone  # timm: loaded only when asked for

    backbones = [m for m in method.modules() if isinstance(m, ResNetBackbone | ViTBackbone)]
    for backbone in backbones:
        backbone.compile(backend=backend)
    return len(backbones)


def decodes_on_device(decode: str, device: torch.device) -> bool:
    """Whether ``data.decode`` leaves JPEG pixels to the training device (``auto``: on CUDA)."""
    if decode == "gpu" and device.type != "cuda":
        log.warning(
            "data.decode=gpu on a %s run: JPEGs are decoded in the training process, not in the "
            "loader workers (data.decode=cpu or auto decodes them in the workers)",
            device.type,
        )
    return decode == "gpu" or (decode == "auto" and device.type == "cuda")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_initial_model(cfg: ExperimentConfig) -> Method:
    """The method as a run of ``cfg`` starts: weights drawn from ``train.init_seed`` (``train.seed``
    when unset), every later random draw from ``train.seed``."""
    init_seed = cfg.train.seed if cfg.train.init_seed is None else cfg.train.init_seed
    seed_everything(init_seed)
    method = build_model(cfg)
    if init_seed != cfg.train.seed:
        seed_everything(cfg.train.seed)
    return method


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list):
        out = {f"{prefix}.#": len(data)}
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}.{i}"))
        return out
    return {prefix: data}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key (checkpoint A, now B)`` for every key whose change makes a resume inexact."""
    old, new = _flatten(saved), _flatten(current)
    differences = []
    for key in sorted(set(old) | set(new)):
        # a key a checkpoint predates equals its default when that default is None (unset)
        if key.startswith(RESUMABLE_CHANGES) or old.get(key) == new.get(key):
            continue
        name = key.replace(".#", " (number of items)")
        differences.append(f"{name} (checkpoint {old.get(key, '<unset>')}, now {new.get(key, '<unset>')})")
    return differences


def worker_error_message(exc: BaseException) -> str:
    """The message of an error raised in a DataLoader worker, without the worker's traceback."""
    text = str(exc).strip()
    if not text.startswith("Caught "):
        return text
    last = text.splitlines()[-1]
    name = type(exc).__name__
    return last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last


@dataclass
class _Run:
    """Everything one ``fit`` builds, shared by its phases."""

    method: Method
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    dataset: MultiViewDataset
    autocast_dtype: torch.dtype | None
    per_process: int
    step: int = 0
    resumed_from: Path | None = None
    steps_per_epoch: int = 0
    total_steps: int = 0
    end_step: int = 0
    schedule: Schedule | None = None
    window: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    last_record: dict[str, Any] = field(default_factory=dict)
    skipped_total: int = 0
    unreadable: set[str] = field(default_factory=set)
    #: the online dense probe, on the main process when ``train.probe`` asks for one
    probe: OnlineProbe | None = None
    #: the run's environment, data and config, stored in every checkpoint
    ledger: dict[str, Any] = field(default_factory=dict)
    monitor: CollapseMonitor | None = None


class Trainer:
    """Runs one pre-training job described by an :class:`ExperimentConfig` into ``run_dir``.

    ``resume``: None (a new run; the directory must not hold one unless ``overwrite``), ``"auto"``
    (the newest intact checkpoint of ``run_dir``, which must exist), ``"auto-or-new"`` (that
    checkpoint if there is one, else a new run), or a checkpoint path.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | Path,
        resume: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.device = dist.init_from_environment(config.train.collective_timeout_s)
        self.is_main = dist.is_main_process()
        self._saved_step: int | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def _unwritable(self, exc: OSError) -> TrainingError:
        return TrainingError(f"cannot write into the run directory: {describe_os_error(exc, self.run_dir)}")

    def _existing_run(self) -> str | None:
        """What makes ``run_dir`` an existing run, or None."""
        if checkpoint_candidates(self.run_dir):
            return "checkpoints"
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.is_file() and metrics.stat().st_size:
            return "a training history (metrics.jsonl) but no checkpoint"
        return None

    def _prepare_run_dir(self) -> None:
        existing = self._existing_run()
        if self.resume is None and existing and not self.overwrite:
            raise TrainingError(
                f"{self.run_dir} already holds a run ({existing}); continue it with --resume auto, "
                "start over with --overwrite, or choose another --out"
            )
        if self.resume == "auto" and existing != "checkpoints":
            raise TrainingError(
                f"--resume auto: no checkpoint in {self.run_dir / 'checkpoints'}; "
                "run without --resume to start a new run there"
            )
        if not self.is_main:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise self._unwritable(exc) from exc
        start_over = self.overwrite or (self.resume == RESUME_OR_NEW and existing != "checkpoints")
        if start_over and existing:
            log.warning("starting over in %s: removing the previous run's files", self.run_dir)
            for name in RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)
            for name in RUN_FOLDERS:
                shutil.rmtree(self.run_dir / name, ignore_errors=True)
        for stale in remove_stale_temporaries(self.run_dir / "checkpoints"):
            log.info("removed %s, left by an interrupted save", stale.name)

    def _set_up(self) -> _Run:
        cfg = self.config
        world = dist.world_size()
        if cfg.train.batch_size % world:
            raise TrainingError(
                f"train.batch_size {cfg.train.batch_size} is not divisible by {world} processes"
            )
        self._prepare_run_dir()
        dist.barrier()
        # the step's threads leave the cores of the loader workers (one thread each) free
        configure_cpu_threads(cfg.data.workers, cfg.train.cpu_threads)
        method = build_initial_model(cfg)
        type(method).check_views([v.crop for v in cfg.views])
        source = parse_source(cfg.data.source, length=cfg.data.synthetic_length)
        dataset = MultiViewDataset(
            source,
            ViewSampler([v.crop for v in cfg.views]),
            seed=cfg.train.seed,
            corrupt=cfg.data.corrupt,
            max_skipped_fraction=cfg.data.max_skipped_fraction,
            targets=type(method).view_targets(cfg),
            defer_jpeg=decodes_on_device(cfg.data.decode, self.device),
        )
        if cfg.train.sync_bn and world > 1:
            method = dist.convert_sync_batchnorm(method, self.device)
        method.to(self.device)
        if cfg.train.channels_last:
            method.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            compile_backbones(method, cfg.train.compile_backend)
        optimizer = build_optimizer(method.param_groups() or method, cfg.optim)
        autocast_dtype = resolve_precision(cfg.train.precision, self.device)
        scaler = torch.amp.GradScaler(self.device.type) if autocast_dtype == torch.float16 else None
        model: nn.Module = method
        if world > 1:
            # queues and centres are identical on every process by construction; broadcasting
            # them each step would only cost bandwidth (newer torch names this differently)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = DistributedDataParallel(
                    method,
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False,
                )
        run = _Run(method, model, optimizer, scaler, dataset, autocast_dtype, cfg.train.batch_size // world)
        run.ledger = build_ledger(cfg, source, self.device, world)
        run.monitor = CollapseMonitor(method)
        return run

    # -- resume ---------------------------------------------------------------------------------
    def _load_resume_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        if self.resume is None:
            return None
        if self.resume in ("auto", RESUME_OR_NEW):
            return find_resume_checkpoint(self.run_dir, map_location=self.device)
        path = Path(self.resume)
        if not path.is_file():
            raise TrainingError(f"--resume: no checkpoint at {path}")
        return path, load_checkpoint(path, map_location=self.device)

    def _resume(self, run: _Run) -> None:
        found = self._load_resume_checkpoint()
        if found is None:
            return
        path, ckpt = found
        cfg = self.config
        if ckpt["method"] != cfg.method.name:
            raise TrainingError(f"{path} holds a {ckpt['method']} run, not {cfg.method.name}")
        differences = config_differences(ckpt["config"], to_dict(cfg))
        if differences:
            raise TrainingError(
                f"cannot resume from {path}: the config differs in {'; '.join(differences)}. "
                "Resume with the checkpoint's values, or start a new run in another directory"
            )
        saved_size = ckpt.get("dataset_size")
        if saved_size is not None and saved_size != len(run.dataset):
            raise TrainingError(
                f"cannot resume from {path}: it was trained on {saved_size} images, {cfg.data.source} "
                f"has {len(run.dataset)} (epochs and the schedule would not line up)"
            )
        try:
            left_out = run.method.load_checkpoint_state(ckpt["model"])
            run.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{path} does not fit the configured model: {str(exc).splitlines()[0]}"
            ) from exc
        if run.scaler is not None and ckpt.get("scaler"):
            run.scaler.load_state_dict(ckpt["scaler"])
        if left_out:
            log.warning(
                "%s is an epoch copy without %s: those buffers start afresh, so the run will not "
                "reproduce the uninterrupted one exactly",
                path,
                ", ".join(left_out),
            )
        restore_rng_state(ckpt["rng"])
        run.step = int(ckpt["step"])
        run.resumed_from = path
        self._saved_step = run.step

    # -- the loop -------------------------------------------------------------------------------
    def _loader(self, run: _Run) -> DataLoader:
        cfg = self.config
        batches = EpochBatchSampler(
            len(run.dataset),
            run.per_process,
            dist.world_size(),
            dist.rank(),
            cfg.train.seed,
            cfg.train.epochs,
            run.step,
        )
        run.steps_per_epoch = batches.steps_per_epoch
        run.total_steps = cfg.train.steps or batches.steps_per_epoch * cfg.train.epochs
        batches.epochs = math.ceil(run.total_steps / run.steps_per_epoch)
        max_steps = cfg.train.max_steps
        run.end_step = min(run.total_steps, max_steps) if max_steps else run.total_steps
        run.schedule = Schedule(cfg.optim, run.steps_per_epoch, run.total_steps / run.steps_per_epoch)
        return DataLoader(
            run.dataset,
            batch_sampler=batches,
            collate_fn=collate_views,
            num_workers=cfg.data.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if cfg.data.workers > 0 else None,
            worker_init_fn=quiet_worker if cfg.data.workers > 0 else None,
        )

    def _banner(self, run: _Run) -> None:
        cfg = self.config
        m = cfg.model
        arch = m.arch + (", small input" if m.small_input else "")
        arch += f", width {m.width:g}" if m.width != 1 else ""
        limit = f", stopping at step {run.end_step}" if run.end_step < run.total_steps else ""
        where = f"resuming from {run.resumed_from} at step {run.step}" if run.resumed_from else "new run"
        for line in (
            f"pretrain {cfg.method.name} ({arch}) on {cfg.data.source}",
            f"  images: {len(run.dataset)}, {len(cfg.views)} views, batch {cfg.train.batch_size} "
            f"({run.per_process} per process x {dist.world_size()})",
            f"  steps: {run.steps_per_epoch} per epoch x {run.total_steps / run.steps_per_epoch:g} epochs = "
            f"{run.total_steps}{limit}",
            f"  device: {self.device}, precision {run.autocast_dtype or 'fp32'}, "
            f"{torch.get_num_threads()} CPU threads per process",
            f"  run directory: {self.run_dir} ({where})",
        ):
            log.info(line.replace("torch.", ""))

    def _train_step(self, run: _Run, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], float]:
        """One optimisation step (its outputs and lr); ``run.step`` counts it once it is complete."""
        cfg = self.config
        step = run.step
        lr = run.schedule.apply(run.optimizer, step)
        teacher = run.method.teacher_momentum()
        momentum = run.schedule.momentum(step, teacher) if teacher is not None else None
        shared = torch.Generator().manual_seed(derive_seed(cfg.train.seed, step))
        local = torch.Generator().manual_seed(derive_seed(cfg.train.seed, step, dist.rank(), 1))
        views = prepare_views(batch, cfg.views, local, self.device, cfg.train.channels_last)
        if run.monitor is not None:
            run.monitor.start_step()
        context = Step(
            step=step,
            total_steps=run.total_steps,
            epoch=step // run.steps_per_epoch,
            generator=shared,
            momentum=momentum,
        )
        amp = (
            torch.autocast(self.device.type, dtype=run.autocast_dtype)
            if run.autocast_dtype
            else nullcontext()
        )
        with amp:
            outputs = run.model(views, context)
        loss = outputs["loss"]
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss is {loss.item()} at step {step}; lower optim.lr or enable optim.clip_grad "
                f"(the last good checkpoint is in {self.run_dir / 'checkpoints'})"
            )
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.unscale_(run.optimizer)
            grad_norm = clip_gradients(run.method, cfg.optim)
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            loss.backward()
            grad_norm = clip_gradients(run.method, cfg.optim)
            run.optimizer.step()
        run.step += 1
        run.skipped_total += int(batch["skipped"])
        logged = {k: v.detach() for k, v in outputs.items()}
        if torch.isfinite(grad_norm):  # a step the fp16 scaler skips has no gradient to speak of
            logged["grad_norm"] = grad_norm.detach()
        return logged, lr

    def _log(
        self, run: _Run, outputs: dict[str, torch.Tensor], lr: float, seconds: tuple[float, float], writer
    ) -> None:
        wait_time, busy_time = seconds
        for key, value in outputs.items():
            run.window[key].append(float(value))
        if run.step % self.config.train.log_every and run.step != run.end_step:
            return
        means = {k: sum(v) / len(v) for k, v in run.window.items()}
        names = sorted(means)
        reduced = dist.all_reduce_mean(torch.tensor([means[k] for k in names], dtype=torch.float64))
        elapsed = max(wait_time + busy_time, 1e-9)
        run.last_record = {
            "step": run.step,
            "epoch": round(run.step / run.steps_per_epoch, 4),
            **{k: float(v) for k, v in zip(names, reduced, strict=True)},
            "lr": lr,
            "images_per_s": len(run.window["loss"]) * self.config.train.batch_size / elapsed,
            "data_wait_fraction": wait_time / elapsed,
            "skipped_images": run.skipped_total,
            "unreadable_images": len(run.unreadable),
        }
        if self.is_main and run.monitor is not None:
            # this process's last step alone: the indicators need no exchange between processes
            run.last_record.update(run.monitor.indicators())
        run.window.clear()
        if writer is not None:
            writer.write(run.last_record)

    def _checkpoint_due(self, run: _Run) -> str | None:
        train = self.config.train
        if run.step % run.steps_per_epoch == 0:
            epoch = run.step // run.steps_per_epoch
            if epoch % train.checkpoint_every == 0 or run.step == run.total_steps:
                return f"epoch_{epoch:04d}.pt"
        if train.checkpoint_every_steps and run.step % train.checkpoint_every_steps == 0:
            return LAST
        return None

    def _fetch(self, iterator, run: _Run, stop: StopRequest) -> dict[str, Any] | None:
        """The next batch; None at the end of the data, or when a stop request cut the fetch short."""
        try:
            batch = next(iterator)
            if batch["deferred"]:
                # decoded here, not in the step: a file the device cannot read is a data error
                complete_views(batch, run.dataset.sampler, self.device, self.config.data.corrupt)
            if batch["unreadable"]:
                # each worker checks its own share; the budget is over the distinct files of all
                run.unreadable.update(batch["unreadable"])
                fraction = self.config.data.max_skipped_fraction
                example = batch["unreadable"][0]
                check_skip_budget(len(run.unreadable), len(run.dataset), fraction, example)
            return batch
        except StopIteration:
            return None
        except DataError as exc:
            # between two steps the state is whole: keep the work done so far
            if run.step and run.step != self._saved_step:
                self._save(run, LAST)
            raise DataError(worker_error_message(exc)) from None
        except RuntimeError:
            # a signal sent to the whole process group also ends the loader's workers
            if stop.requested:
                return None
            raise

    def _collective_failure(self, exc: RuntimeError, run: _Run) -> TrainingError | None:
        text = str(exc)
        if dist.world_size() == 1 or not any(
            word in text.lower() for word in ("timed out", "timeout", "connection closed", "connection reset")
        ):
            return None
        return TrainingError(
            f"process {dist.rank()}: another process stopped answering during step {run.step} "
            f"(waited up to {self.config.train.collective_timeout_s:g} s, train.collective_timeout_s); "
            f"the job stops. Resume from the last checkpoint with --resume auto"
        )

    def _loop(self, run: _Run, loader: DataLoader, writer, progress, stop: StopRequest) -> bool:
        """Steps until the end, or until a stop request; True when stopped by a request."""
        iterator = iter(loader)
        wait = busy = 0.0
        tick = time.perf_counter()
        try:
            while run.step < run.end_step:
                batch = self._fetch(iterator, run, stop)
                # every process takes the same decision, before anyone starts the step
                if dist.any_process(stop.requested):
                    return True
                if batch is None:
                    break
                fetched = time.perf_counter()
                wait += fetched - tick
                outputs, lr = self._train_step(run, batch)
                tick = time.perf_counter()
                busy += tick - fetched
                self._log(run, outputs, lr, (wait, busy), writer)
                if run.last_record.get("step") == run.step:
                    wait = busy = 0.0
                    if progress is not None:
                        self._postfix(run, progress)
                if progress is not None:
                    progress.update(1)
                name = self._checkpoint_due(run)
                if name is not None:
                    self._save(run, name)
                if run.probe is not None and run.probe.due(run.step, run.steps_per_epoch):
                    # after the save: a resume from this epoch's checkpoint never probes it again;
                    # the probe's time is neither data wait nor step time
                    tick += self._probe(run, writer, progress)
        finally:
            # workers of an iterator that an exception keeps alive would outlive the run
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        return False

    def _postfix(self, run: _Run, progress) -> None:
        figures = {"loss": f"{run.last_record['loss']:.4f}", "lr": f"{run.last_record['lr']:.3g}"}
        if run.probe is not None:
            figures.update(run.probe.postfix())
        progress.set_postfix(figures)

    def _probe(self, run: _Run, writer, progress) -> float:
        """Run the online probe on the exported encoder; the seconds it took."""
        started = time.perf_counter()
        record = run.probe(run.method.export_encoder(), run.step, round(run.step / run.steps_per_epoch, 4))
        if record is not None:
            if writer is not None:
                writer.write(record)
            if progress is not None and run.last_record:
                self._postfix(run, progress)
        return time.perf_counter() - started

    # -- saving ---------------------------------------------------------------------------------
    def _save(self, run: _Run, name: str) -> Path | None:
        """Write ``last.pt`` (full state) and, at epoch ends, the epoch file ``name`` (without the
        buffers the method leaves out of epoch copies), on the main process."""
        if not self.is_main:
            return None
        ckpt_dir = self.run_dir / "checkpoints"
        last = save_atomic(self._state(run, light=False), ckpt_dir / LAST)
        self._saved_step = run.step
        if name == LAST:
            return last
        if run.method.light_state_exclude:
            return save_atomic(self._state(run, light=True), ckpt_dir / name)
        # the same contents: copy rather than serialise again
        return copy_atomic(last, ckpt_dir / name)

    def _state(self, run: _Run, light: bool) -> dict[str, Any]:
        state = {
            "format": FORMAT,
            "method": self.config.method.name,
            "config": to_dict(self.config),
            "model": run.method.checkpoint_state(light=light),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "step": run.step,
            "epoch": run.step / run.steps_per_epoch,
            "dataset_size": len(run.dataset),
            "rng": rng_state(),
            "ledger": run.ledger,
        }
        state["checksum"] = state_digest(state)
        return state

    # -- the whole job --------------------------------------------------------------------------
    def _open_history(self, run: _Run) -> tuple[logging.Handler | None, MetricsWriter | None, Any]:
        """On the main process: ``run.log``, ``config.yaml``, the metrics writer (cut back to the
        resumed step), the banner, the online probe and the progress bar."""
        cfg = self.config
        if not self.is_main:
            return None, None, None
        try:
            handler = open_run_log(self.run_dir)
            save_config(cfg, self.run_dir / "config.yaml")
            writer = MetricsWriter(
                self.run_dir, cfg.train.tensorboard, run.step if run.resumed_from else None
            )
        except OSError as exc:
            raise self._unwritable(exc) from exc
        self._banner(run)
        # read once, here, so that its warnings reach run.log; it times the training from now
        run.probe = OnlineProbe.create(cfg.train.probe, self.device)
        progress = None
        if cfg.train.progress:
            from tqdm import tqdm

            progress = tqdm(
                total=run.end_step,
                initial=run.step,
                desc=f"{cfg.method.name} pretrain",
                unit="step",
                dynamic_ncols=True,
                # a log file (CI, a batch job) gets a line every 30 s instead of every 0.1 s
                mininterval=0.1 if sys.stderr.isatty() else 30.0,
            )
        return handler, writer, progress

    @staticmethod
    def _close_history(handler: logging.Handler | None, writer: MetricsWriter | None, progress: Any) -> None:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
        if handler is not None:
            logging.getLogger("densessl").removeHandler(handler)
            handler.close()

    def fit(self) -> dict[str, Any]:
        """Train to the end (or to ``train.max_steps``, or to a stop request); returns a summary."""
        run = self._set_up()
        self._resume(run)
        loader = self._loader(run)
        handler, writer, progress = self._open_history(run)
        started = time.perf_counter()
        run.method.train()
        # the history is closed with the stop handler still in place: a signal arriving while the
        # run winds down is a repeat of the stop, not a kill that loses the exit status
        with StopRequest() as stop:
            try:
                try:
                    interrupted = self._loop(run, loader, writer, progress, stop)
                except RuntimeError as exc:
                    failure = self._collective_failure(exc, run)
                    if failure is None:
                        raise
                    raise failure from None
                if progress is not None:
                    progress.close()
                    progress = None
                final = None
                if self.is_main:
                    final = self.run_dir / "checkpoints" / LAST
                    if self._saved_step != run.step:
                        self._save(run, LAST)
                dist.barrier()
                if interrupted:
                    log.warning("stopped at step %d; saved %s (continue with --resume auto)", run.step, final)
            except Exception as exc:
                log.error("%s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                raise
            finally:
                self._close_history(handler, writer, progress)
                if run.monitor is not None:
                    run.monitor.close()
            summary = {
                "step": run.step,
                "total_steps": run.total_steps,
                "interrupted": interrupted,
                "seconds": time.perf_counter() - started,
                "checkpoint": str(final) if final else None,
                "last_metrics": run.last_record,
            }
        if interrupted:
            raise KeyboardInterrupt
        return summary

"""The pre-training loop: one code path for one CPU, one GPU or many processes under torchrun.

The trainer knows methods only through :mod:`densessl.methods.base`: it builds the configured
one, feeds it :class:`Views`, minimises the ``loss`` it returns and logs every other scalar.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import sys
import time
import warnings
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from densessl import distributed as dist
from densessl.augment import apply_photometric, normalize
from densessl.config import ExperimentConfig, ViewConfig, save_config, to_dict
from densessl.data.sources import parse_source
from densessl.methods import Method, Step, Views, build_method
from densessl.models.backbones import backbone_from_config
from densessl.training.checkpoint import (
    FORMAT,
    LAST,
    find_resume_checkpoint,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_atomic,
)
from densessl.training.optim import build_optimizer, clip_gradients, lr_at
from densessl.views.dataset import EpochBatchSampler, MultiViewDataset, collate_views, derive_seed
from densessl.views.sampler import ViewSampler

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (diverged loss, bad resume target); the message says why."""


def build_model(config: ExperimentConfig) -> Method:
    """The configured method with its backbone (same initialisation for the same seed)."""
    return build_method(config.method, lambda: backbone_from_config(config.model))


def prepare_views(
    batch: dict[str, Any],
    views: list[ViewConfig],
    generator: torch.Generator,
    device: torch.device,
    channels_last: bool,
) -> Views:
    """Move a collated batch to ``device`` and run each view's photometric augmentation there."""
    images = []
    for crops, view in zip(batch["crops"], views, strict=True):
        x = crops.to(device, non_blocking=True).float().div_(255.0)
        x = normalize(apply_photometric(x, view.photometric, generator))
        images.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return Views(
        images=images,
        boxes=batch["boxes"].to(device),
        flips=batch["flips"].to(device),
        image_sizes=batch["image_sizes"].to(device),
    )


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class MetricsWriter:
    """JSON lines in ``metrics.jsonl`` (always) and TensorBoard scalars (optional)."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.file = (run_dir / "metrics.jsonl").open("a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed; writing metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """Runs one pre-training job described by an :class:`ExperimentConfig` into ``run_dir``."""

    def __init__(self, config: ExperimentConfig, run_dir: str | Path, resume: str | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.device = dist.init_from_environment()
        self.is_main = dist.is_main_process()
        self._saved_step: int | None = None

    # ------------------------------------------------------------------------------------------
    def _resume_path(self) -> Path | None:
        if self.resume is None:
            return None
        if self.resume == "auto":
            return find_resume_checkpoint(self.run_dir)
        path = Path(self.resume)
        if not path.is_file():
            raise TrainingError(f"--resume: no checkpoint at {path}")
        return path

    def _checkpoint(
        self, method: Method, optimizer, scaler, step: int, steps_per_epoch: int, name: str
    ) -> Path:
        state = {
            "format": FORMAT,
            "method": self.config.method.name,
            "config": to_dict(self.config),
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "epoch": step / steps_per_epoch,
            "rng": rng_state(),
        }
        ckpt_dir = self.run_dir / "checkpoints"
        last = save_atomic(state, ckpt_dir / LAST)
        self._saved_step = step
        if name == LAST:
            return last
        # serialise once; the epoch file is a copy, written atomically like the original
        tmp = ckpt_dir / f".{name}.tmp-{os.getpid()}"
        shutil.copyfile(last, tmp)
        os.replace(tmp, ckpt_dir / name)
        return ckpt_dir / name

    # ------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.config
        world = dist.world_size()
        if cfg.train.batch_size % world:
            raise TrainingError(
                f"train.batch_size {cfg.train.batch_size} is not divisible by {world} processes"
            )
        per_process = cfg.train.batch_size // world
        self.run_dir.mkdir(parents=True, exist_ok=True)

        seed_everything(cfg.train.seed)
        source = parse_source(cfg.data.source, length=cfg.data.synthetic_length)
        dataset = MultiViewDataset(
            source, ViewSampler([v.crop for v in cfg.views]), seed=cfg.train.seed, corrupt=cfg.data.corrupt
        )
        method = build_model(cfg)
        if cfg.train.sync_bn and world > 1:
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        method.to(self.device)
        if cfg.train.channels_last:
            method.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(method, cfg.optim)
        autocast_dtype = resolve_precision(cfg.train.precision, self.device)
        scaler = torch.amp.GradScaler(self.device.type) if autocast_dtype == torch.float16 else None

        start_step = 0
        resume_path = self._resume_path()
        if resume_path is not None:
            ckpt = load_checkpoint(resume_path, map_location=self.device)
            if ckpt["method"] != cfg.method.name:
                raise TrainingError(f"{resume_path} holds a {ckpt['method']} run, not {cfg.method.name}")
            method.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            restore_rng_state(ckpt["rng"])
            start_step = int(ckpt["step"])
            if self.is_main:
                log.info("resuming from %s at step %d", resume_path, start_step)

        batches = EpochBatchSampler(
            len(dataset), per_process, world, dist.rank(), cfg.train.seed, cfg.train.epochs, start_step
        )
        steps_per_epoch = batches.steps_per_epoch
        total_steps = steps_per_epoch * cfg.train.epochs
        end_step = min(total_steps, cfg.train.max_steps) if cfg.train.max_steps else total_steps
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collate_views,
            num_workers=cfg.data.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if cfg.data.workers > 0 else None,
        )
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

        if self.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        writer = MetricsWriter(self.run_dir, cfg.train.tensorboard) if self.is_main else None
        progress = None
        if self.is_main and cfg.train.progress:
            from tqdm import tqdm

            progress = tqdm(
                total=end_step,
                initial=start_step,
                desc=f"{cfg.method.name} pretrain",
                unit="step",
                dynamic_ncols=True,
                # a log file (CI, a batch job) gets a line every 30 s instead of every 0.1 s
                mininterval=0.1 if sys.stderr.isatty() else 30.0,
            )

        interrupted = False

        def on_signal(signum, frame):  # SIGTERM from a scheduler: save, then stop like Ctrl-C
            raise KeyboardInterrupt

        previous_handler = signal.signal(signal.SIGTERM, on_signal) if self.is_main else None
        step = start_step
        window: dict[str, list[float]] = defaultdict(list)
        wait_time = busy_time = 0.0
        skipped_total = 0
        last_record: dict[str, Any] = {}
        started = time.perf_counter()
        method.train()
        try:
            tick = time.perf_counter()
            for batch in loader:
                if step >= end_step:
                    break
                fetched = time.perf_counter()
                wait_time += fetched - tick
                epoch = step // steps_per_epoch
                lr = lr_at(cfg.optim, step, steps_per_epoch, cfg.train.epochs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                shared = torch.Generator().manual_seed(derive_seed(cfg.train.seed, step))
                local = torch.Generator().manual_seed(derive_seed(cfg.train.seed, step, dist.rank(), 1))
                views = prepare_views(batch, cfg.views, local, self.device, cfg.train.channels_last)
                context = Step(step=step, total_steps=total_steps, epoch=epoch, generator=shared)
                amp = (
                    torch.autocast(self.device.type, dtype=autocast_dtype)
                    if autocast_dtype is not None
                    else nullcontext()
                )
                with amp:
                    outputs = model(views, context)
                loss = outputs["loss"]
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss is {loss.item()} at step {step}; lower optim.lr or enable optim.clip_grad "
                        f"(the last good checkpoint is in {self.run_dir / 'checkpoints'})"
                    )
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    clip_gradients(method, cfg.optim)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    clip_gradients(method, cfg.optim)
                    optimizer.step()
                step += 1
                skipped_total += int(batch["skipped"])
                for key, value in outputs.items():
                    window[key].append(float(value.detach()))
                tick = time.perf_counter()
                busy_time += tick - fetched

                if step % cfg.train.log_every == 0 or step == end_step:
                    means = {k: sum(v) / len(v) for k, v in window.items()}
                    names = sorted(means)
                    reduced = dist.all_reduce_mean(
                        torch.tensor([means[k] for k in names], dtype=torch.float64)
                    )
                    elapsed = wait_time + busy_time
                    last_record = {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 4),
                        **{k: float(v) for k, v in zip(names, reduced, strict=True)},
                        "lr": lr,
                        "images_per_s": len(window["loss"]) * cfg.train.batch_size / max(elapsed, 1e-9),
                        "data_wait_fraction": wait_time / max(elapsed, 1e-9),
                        "skipped_images": skipped_total,
                    }
                    if writer is not None:
                        writer.write(last_record)
                    if progress is not None:
                        progress.set_postfix(loss=f"{last_record['loss']:.4f}", lr=f"{lr:.3g}")
                    window.clear()
                    wait_time = busy_time = 0.0
                if progress is not None:
                    progress.update(1)

                at_epoch_end = step % steps_per_epoch == 0
                epoch_done = step // steps_per_epoch
                if self.is_main:
                    if at_epoch_end and (epoch_done % cfg.train.checkpoint_every == 0 or step == total_steps):
                        self._checkpoint(
                            method, optimizer, scaler, step, steps_per_epoch, f"epoch_{epoch_done:04d}.pt"
                        )
                    elif cfg.train.checkpoint_every_steps and step % cfg.train.checkpoint_every_steps == 0:
                        self._checkpoint(method, optimizer, scaler, step, steps_per_epoch, LAST)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if progress is not None:
                progress.close()
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)

        final = None
        if self.is_main:
            final = self.run_dir / "checkpoints" / LAST
            if self._saved_step != step:
                self._checkpoint(method, optimizer, scaler, step, steps_per_epoch, LAST)
            if writer is not None:
                writer.close()
        dist.barrier()
        summary = {
            "step": step,
            "total_steps": total_steps,
            "interrupted": interrupted,
            "seconds": time.perf_counter() - started,
            "checkpoint": str(final) if final else None,
            "last_metrics": last_record,
        }
        if interrupted:
            log.warning("interrupted at step %d; saved %s (continue with --resume auto)", step, final)
            raise KeyboardInterrupt
        return summary

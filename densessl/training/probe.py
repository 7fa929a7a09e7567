"""The online dense probe: the encoder a method exports, frozen, scored while it trains.

With ``train.probe.every_epochs: N`` the main process scores, at the end of every N-th epoch and
after that epoch's checkpoint is written, a frozen copy of :meth:`Method.export_encoder` on a
small labelled set (``train.probe.data``, as ``--data`` of ``densessl eval seg-nn``):

- ``probe_nn_miou``: dense nearest-neighbour retrieval mIoU, :func:`~densessl.eval.retrieval.
  evaluate_nn` with ``densessl eval seg-nn``'s settings;
- ``probe_linear_miou``: the linear probe of ``densessl eval seg-probe`` (its ``default`` preset)
  with ``train.probe.linear_epochs`` epochs and one seed, 0.

Both read one feature extraction (:func:`~densessl.eval.features.extract`) of the same images,
so the figures equal what ``densessl eval seg-nn --synthetic-train N --synthetic-val N`` (or
``--limit-train N --limit-val N`` for a folder) and ``seg-probe --epochs E --seeds 0`` print for
the checkpoint of that epoch. They are in percent, like every mIoU of the project, and go to
``metrics.jsonl`` (a record of their own, under the epoch's last step), TensorBoard and the
progress bar.

What the probe promises the training:

- **Nothing changes.** It scores a copy of the encoder (the training model keeps its mode,
  gradients, memory format and DDP hooks), and every random generator it could draw from
  (Python, numpy, torch CPU and CUDA) is restored after it, so the losses of a run are
  bit-identical with and without it.
- **Bounded cost.** The probes' wall time stays under ``train.probe.max_time_share`` (5 %) of the
  training time of the process: a probe that would overrun it runs on the first images only, or
  is skipped, and says so in ``run.log``. Every record carries ``probe_seconds``,
  ``probe_images`` and ``probe_time_share`` (all probes so far over the training time so far).
- **No dead run.** The labelled set is read once, at start-up, into memory (images and masks);
  one that cannot be read is one warning and a run without probe. A probe that raises is one
  warning and no figures for that epoch.
- **Multi-process runs.** Only the main process probes, without any collective; the other
  processes wait for it in the next step's collectives, so a probe must stay well under
  ``train.collective_timeout_s``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from densessl.config import ProbeConfig
from densessl.training.checkpoint import restore_rng_state, rng_state

log = logging.getLogger(__name__)

#: ``densessl eval seg-nn``'s defaults: neighbours per patch and softmax temperature
NN_K = 30
NN_TEMPERATURE = 0.02
#: images per forward pass, ``--extract-batch-size``'s default (the retrieval's query chunk too)
EXTRACT_BATCH = 64
#: below this many images per split a probe says too little to be worth its time: it is skipped
MIN_IMAGES = 8
#: a probe aims at this part of the time its share leaves: timings on a shared machine vary
BUDGET_MARGIN = 0.8
#: images the first probe times the encoder on, to estimate its cost before any probe ran
CALIBRATION_IMAGES = 8
#: a probe's cost over its two extractions, assumed until one probe has been measured
#: (retrieval and the linear probe come on top of the forward passes)
FIRST_ESTIMATE_FACTOR = 2.0

Sample = tuple[np.ndarray, np.ndarray]


@dataclass
class ProbeSet:
    """The labelled images of the probe, read once: the first ``images`` of each split."""

    train: list[Sample]
    val: list[Sample]
    num_classes: int
    image_size: int
    #: how void pixels enter the retrieval memory, as ``densessl eval seg-nn`` chooses it
    void: str


def load_probe_set(config: ProbeConfig) -> ProbeSet:
    """Read ``config.data`` as ``densessl eval seg-nn --data`` does, keeping ``config.images``
    images of each split in memory."""
    from densessl.errors import DataError
    from densessl.eval.segmentation_cli import load_segmentation_data

    n = config.images
    data = load_segmentation_data(config.data, synthetic_train=n, synthetic_val=n, limit_train=n, limit_val=n)
    train = [data.train[i] for i in range(len(data.train))]
    val = [data.val[i] for i in range(len(data.val))]
    if not train or not val:
        raise DataError(f"{config.data} has {len(train)} training and {len(val)} validation images")
    return ProbeSet(
        train=train,
        val=val,
        num_classes=data.num_classes,
        image_size=config.image_size or data.image_size,
        void="zero" if data.background == 0 else "skip",
    )


def frozen_copy(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` in eval mode without gradients, in the default memory format.

    The copy leaves the training model alone; the contiguous format makes its convolutions the
    very ones of an encoder loaded from a checkpoint (channels-last ones may round differently).
    """
    frozen = copy.deepcopy(encoder)
    frozen.to(memory_format=torch.contiguous_format)
    frozen.requires_grad_(False)
    return frozen.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class OnlineProbe:
    """Scores the exported encoder every ``config.every_epochs`` epochs (see the module docstring).

    Its clock of the training time starts when it is built: build it just before the loop.
    """

    def __init__(self, config: ProbeConfig, data: ProbeSet, device: torch.device) -> None:
        self.config = config
        self.data = data
        self.device = device
        self.clock = time.perf_counter()
        #: wall seconds spent probing (failed and skipped probes included)
        self.seconds = 0.0
        #: images per split and seconds of the last probe (None before the first)
        self.cost: tuple[int, float] | None = None
        #: the last figures, for the progress bar
        self.last: dict[str, float] = {}

    @classmethod
    def create(cls, config: ProbeConfig, device: torch.device) -> OnlineProbe | None:
        """The probe, with its labelled set read; None when off, or (with a warning) when the
        set cannot be read."""
        if not config.every_epochs:
            return None
        start = time.perf_counter()
        try:
            data = load_probe_set(config)
        except Exception as exc:  # a bad probe set must not end the training
            log.warning(
                "train.probe: cannot read %s (%s); training continues without the probe",
                config.data,
                _first_line(exc),
            )
            return None
        share = f"{config.max_time_share:.0%} of the training time" if config.max_time_share else "no limit"
        log.info(
            "probe: %s, %d + %d images at %d px every %d epochs, read in %.1f s (budget: %s)",
            config.data,
            len(data.train),
            len(data.val),
            data.image_size,
            config.every_epochs,
            time.perf_counter() - start,
            share,
        )
        return cls(config, data, device)

    def due(self, step: int, steps_per_epoch: int) -> bool:
        """Whether ``step`` ends an epoch the probe scores."""
        return step % steps_per_epoch == 0 and (step // steps_per_epoch) % self.config.every_epochs == 0

    def postfix(self) -> dict[str, str]:
        """The last figures, short, for the progress bar."""
        names = {"probe_nn_miou": "nn", "probe_linear_miou": "lin"}
        return {names[k]: f"{v:.1f}" for k, v in self.last.items() if k in names}

    def __call__(self, encoder: nn.Module, step: int, epoch: float) -> dict[str, Any] | None:
        """Score ``encoder`` after ``step``; the ``metrics.jsonl`` record, or None when the probe
        was skipped or failed."""
        start = time.perf_counter()
        train_seconds = max(start - self.clock - self.seconds, 1e-9)
        # every generator the evaluation might draw from (a head's default initialisation draws
        # from torch's) is put back, so the next training step draws what it would have drawn
        state = rng_state()
        try:
            figures = self._measure(encoder, train_seconds, epoch, start)
        except Exception as exc:  # whatever breaks in the probe, the training goes on
            log.warning(
                "probe at epoch %g failed (%s); no probe figures for this epoch, training continues",
                epoch,
                _first_line(exc),
            )
            figures = None
        finally:
            restore_rng_state(state)
        spent = time.perf_counter() - start
        self.seconds += spent
        if figures is None:
            return None
        self.cost = (figures["probe_images"], spent)
        self.last = {k: v for k, v in figures.items() if k.endswith("_miou")}
        return {
            "step": step,
            "epoch": epoch,
            **figures,
            "probe_seconds": spent,
            "probe_time_share": self.seconds / train_seconds,
        }

    def _images(self, backbone: nn.Module, train_seconds: float, epoch: float, start: float) -> int:
        """Images per split this probe can afford within its share of the training time."""
        n = min(len(self.data.train), len(self.data.val))
        share = self.config.max_time_share
        if not share:
            return n
        per_image = self._calibrate(backbone) if self.cost is None else None
        allowed = share * train_seconds - (self.seconds + time.perf_counter() - start)
        fits = self._affordable(BUDGET_MARGIN * allowed, per_image) if allowed > 0 else 0
        if fits >= n:
            return n
        if fits < min(MIN_IMAGES, n):
            log.info(
                "probe skipped at epoch %g: it would take the probes over %g of the training time "
                "(train.probe.max_time_share)",
                epoch,
                share,
            )
            return 0
        log.info(
            "probe at epoch %g on %d of %d images per split, to stay within %g of the training time "
            "(train.probe.max_time_share)",
            epoch,
            fits,
            n,
            share,
        )
        return fits

    def _affordable(self, seconds: float, per_image: float | None = None) -> int:
        """The most images per split a probe is expected to score within ``seconds``.

        Extraction and the linear probe grow with the images, the retrieval with their square:
        from the last probe's cost ``c`` on ``m`` images, ``n`` images cost at most
        ``c * max(n / m, (n / m) ** 2)``. Before any probe, ``per_image`` (from
        :meth:`_calibrate`) is all there is to go by.
        """
        if self.cost is None:
            return int(seconds / per_image)
        images, spent = self.cost
        ratio = seconds / max(spent, 1e-9)
        return int(images * (ratio**0.5 if ratio >= 1 else ratio))

    def _calibrate(self, backbone: nn.Module) -> float:
        """Estimated seconds per image and split, from a forward pass over a few images."""
        from densessl.eval.features import extract

        samples = self.data.train[:CALIBRATION_IMAGES]
        start = time.perf_counter()
        extract(backbone, samples, self.data.image_size, batch_size=EXTRACT_BATCH, device=self.device)
        forward = (time.perf_counter() - start) / len(samples)
        # an image of each split goes through the encoder
        return 2 * forward * FIRST_ESTIMATE_FACTOR

    def _measure(
        self, encoder: nn.Module, train_seconds: float, epoch: float, start: float
    ) -> dict[str, Any] | None:
        from densessl.eval.features import extract
        from densessl.eval.retrieval import evaluate_nn
        from densessl.eval.segmentation import probe_features, resolve_preset
        from densessl.eval.segmentation_cli import to_percent

        backbone = frozen_copy(encoder)
        n = self._images(backbone, train_seconds, epoch, start)
        if n == 0:
            return None
        data, size = self.data, self.data.image_size
        features = [
            extract(backbone, samples[:n], size, batch_size=EXTRACT_BATCH, device=self.device)
            for samples in (data.train, data.val)
        ]
        train, val = features
        retrieval = evaluate_nn(
            train.dense,
            train.masks,
            val.dense,
            val.masks,
            data.num_classes,
            k=NN_K,
            temperature=NN_TEMPERATURE,
            void=data.void,
            seed=0,
            batch_size=EXTRACT_BATCH,
            device=self.device,
        )
        figures: dict[str, Any] = {"probe_nn_miou": to_percent(retrieval)["miou"]}
        if self.config.linear_epochs:
            s = resolve_preset(
                "default", dataset_image_size=size, epochs=self.config.linear_epochs, seeds=(0,)
            )
            linear = probe_features(
                train.dense,
                train.masks,
                val.dense,
                val.masks,
                data.num_classes,
                head="linear",
                seeds=s["seeds"],
                epochs=s["epochs"],
                lr=s["lr"],
                batch_size=s["batch_size"],
                train_resolution=s["train_resolution"],
                device=self.device,
                weight_decay=s["weight_decay"],
                momentum=s["momentum"],
                milestones=s["milestones"],
                standardize=s["standardize"],
            )
            figures["probe_linear_miou"] = to_percent(linear)["miou"]
        figures["probe_images"] = n
        return figures

"""Semantic segmentation by fine-tuning the whole backbone (the revisited-MoCo protocol, spec 3.6).

Unlike the frozen probes of :mod:`densessl.eval.segmentation`, every weight is trained here, so
there is no feature cache: each image goes through the network, augmented, at every epoch.

Model (:class:`FinetuneNet`):

* the backbone is a ResNet whose last stage is dilated (:func:`dilate_last_stage`): every 3x3
  convolution of ``layer4`` gets dilation 2 and padding 2, and every stride-2 convolution of
  ``layer4`` (the first block's and its 1x1 ``downsample``) stride 1. A standard ResNet then
  gives a stride-16 map instead of stride 32; the small-input ResNets (stride 8) give stride 4.
  Only attributes of existing modules change, so the state-dict names and shapes are those of
  the undilated network and pre-trained weights load strictly;
* the FCN decoder (:func:`fcn_decoder`): 3x3 conv C -> 256 (dilation d, padding d, no bias),
  BN, ReLU, 3x3 conv 256 -> 256 (dilation d, padding d, no bias), BN, ReLU, 1x1 conv -> classes
  (no bias), with d = 6 for VOC and 1 for Cityscapes; its logits are upsampled bilinearly
  (``align_corners=False``) to the input size. The loss is cross-entropy with ignore index 255.

Recipes (:data:`PRESETS`, :func:`resolve_preset`; every value can be overridden):

* ``voc``: PASCAL VOC ``trainaug``; training images are flipped at random, rotated by
  U[-5, 5] degrees and scaled by U[0.75, 1.25] about their centre (bicubic for the image,
  nearest for the mask), then resized to 512 x 512; validation images are resized to
  512 x 512. SGD (lr 0.003, momentum 0.9, weight decay 1e-4), batch 16, 45 epochs, lr x0.1
  after epochs 30 and 40. With other ``epochs`` the steps move with them (at 2/3 and 8/9 of
  the run) unless ``milestones`` are given.
* ``cityscapes``: 19 classes; training images scaled by a factor drawn from {0.5, 0.75, ...,
  2.0}, cropped at random to 768 x 768 (padded with ignore where smaller), flipped at random;
  validation on the whole image at full resolution. Adam (lr 1e-4, weight decay 1e-4),
  batch 8, 150 epochs, ``lr = base * (1 - epoch / epochs) ** 0.9`` set at each epoch.

Pixels a rotation or a crop brings in from outside the image are labelled 255 and ignored,
rather than counted as background.

Scoring (:func:`finetune`): after every epoch the model is scored on the validation set at the
recipe's evaluation size (VOC 512 x 512, masks resized with nearest neighbour) and, at the same
pass, at each image's original resolution (predictions resized back with nearest neighbour, as
the repository does). Two figures are reported, and kept apart:

* ``final``: the model after the last epoch, at original resolution: the honest figure;
* ``best_on_val``: the repository's figure, the epoch with the best validation mIoU at the
  evaluation size, then its score at original resolution. The epoch is chosen **on the
  validation set** it is scored on, so this figure is optimistic.

:func:`run_finetune` repeats the fine-tuning for several seeds (the paper averages 5 runs) and
gives the mean and sample standard deviation of both. Metrics are
:class:`~densessl.eval.metrics.ConfusionMatrix` fractions in [0, 1], accumulated over the whole
split (``absent="zero"``, the repository's convention, by default).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models.resnet import ResNet
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from densessl.augment import normalize
from densessl.errors import ConfigError
from densessl.eval.metrics import AbsentPolicy, ConfusionMatrix

__all__ = [
    "PRESETS",
    "FinetuneNet",
    "FinetuneSettings",
    "dilate_last_stage",
    "evaluate",
    "fcn_decoder",
    "finetune",
    "is_resnet",
    "lr_at",
    "resolve_preset",
    "run_finetune",
]

log = logging.getLogger(__name__)

IGNORE = 255
#: Cityscapes' training scale factors
CITYSCAPES_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------


def is_resnet(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is a torchvision-named ResNet (what :func:`dilate_last_stage` takes)."""
    return isinstance(backbone, ResNet) and hasattr(backbone, "layer4")


def dilate_last_stage(backbone: nn.Module) -> nn.Module:
    """Dilate ``backbone.layer4`` in place (dilation 2 on every 3x3 conv, stride 1 for every
    stride-2 conv) and return the backbone: its output stride halves, its state-dict does not
    change. Raises :class:`ConfigError` for anything but a torchvision-named ResNet."""
    if not is_resnet(backbone):
        raise ConfigError(
            f"seg-finetune fine-tunes ResNets only (it dilates their layer4), not a {type(backbone).__name__}"
        )
    for module in backbone.layer4.modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if module.kernel_size == (3, 3):
            module.dilation = (2, 2)
            module.padding = (2, 2)
        if module.stride == (2, 2):
            module.stride = (1, 1)
    return backbone


def fcn_decoder(in_channels: int, num_classes: int, dilation: int, channels: int = 256) -> nn.Sequential:
    """The FCN decoder: two dilated 3x3 conv-BN-ReLU blocks of ``channels``, then a 1x1 conv."""
    d = int(dilation)
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=d, dilation=d, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, num_classes, 1, bias=False),
    )


class FinetuneNet(nn.Module):
    """A (dilated) backbone and the FCN decoder; ``forward`` gives logits at the input size."""

    def __init__(self, backbone: nn.Module, num_classes: int, dilation: int, channels: int = 256) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = fcn_decoder(backbone.out_channels, num_classes, dilation, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------
# recipes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneSettings:
    """One fine-tuning recipe. ``size``: the training resize (``fixed``) or crop (``scale-crop``)
    side; ``val_size``: the evaluation resize side, ``None`` for each image's own size."""

    augment: str  # "fixed" (VOC) or "scale-crop" (Cityscapes)
    size: int
    val_size: int | None
    optimizer: str  # "sgd" or "adam"
    lr: float
    weight_decay: float
    momentum: float
    batch_size: int
    epochs: int
    schedule: str  # "step" or "poly"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    power: float = 0.9
    dilation: int = 6
    decoder_channels: int = 256
    rotation: float = 5.0
    scale_range: tuple[float, float] = (0.75, 1.25)
    scales: tuple[float, ...] = field(default_factory=lambda: CITYSCAPES_SCALES)
    train_split: str = "train"
    val_split: str = "val"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the JSON line."""
        out = asdict(self)
        for key in ("milestones", "scale_range", "scales"):
            out[key] = list(out[key])
        return out


PRESETS: dict[str, FinetuneSettings] = {
    "voc": FinetuneSettings(
        augment="fixed",
        size=512,
        val_size=512,
        optimizer="sgd",
        lr=0.003,
        weight_decay=1e-4,
        momentum=0.9,
        batch_size=16,
        epochs=45,
        schedule="step",
        milestones=(30, 40),
        dilation=6,
        train_split="trainaug",
        val_split="val",
    ),
    "cityscapes": FinetuneSettings(
        augment="scale-crop",
        size=768,
        val_size=None,
        optimizer="adam",
        lr=1e-4,
        weight_decay=1e-4,
        momentum=0.9,  # unused by Adam (its betas stay at PyTorch's defaults)
        batch_size=8,
        epochs=150,
        schedule="poly",
        power=0.9,
        dilation=1,
        train_split="train",
        val_split="val",
    ),
}


def resolve_preset(name: str, **overrides: Any) -> FinetuneSettings:
    """Preset ``name`` with the ``overrides`` whose value is not ``None`` (parsed command-line
        options pass straight through). ``val_size=0`` means each image's own size; where the preset
    trains and scores at one size (VOC), ``size`` sets both unless ``val_size`` is given. When ``epochs``
        changes and ``milestones`` are not given, a step schedule's milestones keep their place in
        the run (VOC: 30 and 40 of 45). Invalid values raise :class:`ConfigError` with one line."""
    if name not in PRESETS:
        raise ConfigError(f"unknown fine-tuning preset {name!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(base.to_dict()))
    if unknown:
        raise ConfigError(f"unknown fine-tuning setting(s) {', '.join(unknown)}")
    if given.get("val_size") == 0:
        given["val_size"] = None
    if "size" in given and "val_size" not in given and base.val_size == base.size:
        # VOC trains and scores at one fixed size: a new size is both, unless told otherwise
        given["val_size"] = given["size"]
    if "epochs" in given and "milestones" not in given and base.schedule == "step":
        given["milestones"] = tuple(round(m * given["epochs"] / base.epochs) for m in base.milestones)
    for key in ("milestones", "scale_range", "scales"):
        if key in given:
            given[key] = tuple(given[key])
    settings = replace(base, **given)
    _check(settings)
    return settings


def _check(s: FinetuneSettings) -> None:
    for key in ("size", "batch_size", "epochs", "dilation", "decoder_channels"):
        if int(getattr(s, key)) < 1:
            raise ConfigError(f"fine-tuning {key} must be a positive integer, got {getattr(s, key)}")
    if s.val_size is not None and s.val_size < 1:
        raise ConfigError(f"fine-tuning val_size must be positive (0: original size), got {s.val_size}")
    if not s.lr > 0:
        raise ConfigError(f"fine-tuning lr must be > 0, got {s.lr}")
    if s.weight_decay < 0:
        raise ConfigError(f"fine-tuning weight_decay must be >= 0, got {s.weight_decay}")
    if s.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"fine-tuning optimizer must be sgd or adam, got {s.optimizer!r}")
    if s.schedule not in ("step", "poly"):
        raise ConfigError(f"fine-tuning schedule must be step or poly, got {s.schedule!r}")
    if s.augment not in ("fixed", "scale-crop"):
        raise ConfigError(f"fine-tuning augment must be fixed or scale-crop, got {s.augment!r}")
    if any(m < 0 for m in s.milestones):
        raise ConfigError(f"fine-tuning milestones must be >= 0, got {list(s.milestones)}")


def lr_at(settings: FinetuneSettings, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch``: step decay (x ``gamma`` from each milestone on)
    or poly decay ``lr * (1 - epoch / epochs) ** power``."""
    if settings.schedule == "poly":
        return settings.lr * (1.0 - epoch / settings.epochs) ** settings.power
    passed = sum(1 for m in settings.milestones if epoch >= m)
    return settings.lr * settings.gamma**passed


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def _pil_pair(item: Any) -> tuple[Image.Image, Image.Image]:
    image, mask = item
    return Image.fromarray(np.ascontiguousarray(image)), Image.fromarray(np.ascontiguousarray(mask))


def _to_tensors(image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    return img, torch.from_numpy(np.array(mask, dtype=np.uint8)).long()


def _resize(image: Image.Image, mask: Image.Image | None, size: tuple[int, int]):
    """(height, width) resize: bicubic for the image, nearest for the mask."""
    image = TF.resize(image, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    if mask is not None:
        mask = TF.resize(mask, list(size), interpolation=InterpolationMode.NEAREST)
    return image, mask


class _TrainSet(torch.utils.data.Dataset):
    """Augmented training pairs. Item ``k`` is image ``k % n`` of epoch ``k // n``, its random
    draws seeded by ``(seed, k)``: the same whatever the number of data-loader workers."""

    def __init__(self, samples: Sequence[Any], settings: FinetuneSettings, seed: int) -> None:
        self.samples = samples
        self.s = settings
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + int(k))
        image, mask = _pil_pair(self.samples[int(k) % len(self.samples)])
        s = self.s
        if s.augment == "fixed":
            if rng.random() < 0.5:
                image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
            angle = rng.uniform(-s.rotation, s.rotation)
            scale = rng.uniform(*s.scale_range)
            affine = dict(angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0])
            image = TF.affine(image, **affine, interpolation=InterpolationMode.BICUBIC, fill=0)
            mask = TF.affine(mask, **affine, interpolation=InterpolationMode.NEAREST, fill=IGNORE)
            image, mask = _resize(image, mask, (s.size, s.size))
        else:
            factor = rng.choice(s.scales)
            w, h = image.size
            size = (max(1, round(h * factor)), max(1, round(w * factor)))
            image = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
            mask = TF.resize(mask, list(size), interpolation=InterpolationMode.NEAREST)
            pad_h, pad_w = max(0, s.size - size[0]), max(0, s.size - size[1])
            if pad_h or pad_w:
                image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
                mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=IGNORE)
            w, h = image.size
            top, left = rng.randint(0, h - s.size), rng.randint(0, w - s.size)
            image = TF.crop(image, top, left, s.size, s.size)
            mask = TF.crop(mask, top, left, s.size, s.size)
            if rng.random() < 0.5:
                image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
        return _to_tensors(image, mask)


class _ValSet(torch.utils.data.Dataset):
    """Validation pairs: the image resized to ``val_size`` (or kept), the mask as it is."""

    def __init__(self, samples: Sequence[Any], val_size: int | None) -> None:
        self.samples = samples
        self.val_size = val_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = _pil_pair(self.samples[i])
        if self.val_size is not None:
            image, _ = _resize(image, None, (self.val_size, self.val_size))
        return _to_tensors(image, mask)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


class _EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices ``epoch * n + i`` (see :class:`_TrainSet`); set ``epoch`` before iterating."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter((torch.randperm(self.n, generator=gen) + self.epoch * self.n).tolist())


# ----------------------------------------------------------------------------------------------
# training and scoring
# ----------------------------------------------------------------------------------------------


def _autocast(device: torch.device):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    num_classes: int,
    device: str | torch.device = "cpu",
    absent: AbsentPolicy = "zero",
) -> dict[str, dict]:
    """Score ``model`` on a loader of lists of ``(image, mask)`` pairs (uint8 (3, h, w) images at
    the evaluation size, masks at their original size).

    Returns ``{"at_size": ..., "original": ...}`` (:meth:`ConfusionMatrix.compute` dicts): masks
    resized to the input with nearest neighbour, and predictions resized back to each mask's
    size with nearest neighbour. Identical when the images keep their own size.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    at_size = ConfusionMatrix(num_classes, ignore_index=IGNORE)
    original = ConfusionMatrix(num_classes, ignore_index=IGNORE)
    try:
        for batch in loader:
            # images of one size go through together; others (full-resolution VOC) one by one
            shapes = {tuple(image.shape) for image, _ in batch}
            groups = [batch] if len(shapes) == 1 else [[pair] for pair in batch]
            for group in groups:
                x = normalize(torch.stack([image for image, _ in group]).to(device))
                with _autocast(device):
                    pred = model(x).argmax(1)
                for p, (_, mask) in zip(pred, group, strict=True):
                    mask = mask.to(device)
                    if tuple(p.shape) == tuple(mask.shape):
                        at_size.update(p, mask)
                        original.update(p, mask)
                        continue
                    resized_mask = F.interpolate(mask[None, None].float(), size=p.shape, mode="nearest-exact")
                    at_size.update(p, resized_mask[0, 0].long())
                    resized_pred = F.interpolate(p[None, None].float(), size=mask.shape, mode="nearest-exact")
                    original.update(resized_pred[0, 0].long(), mask)
    finally:
        model.train(was_training)
    return {"at_size": at_size.compute(absent), "original": original.compute(absent)}


def _optimizer(model: nn.Module, s: FinetuneSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


def _show_progress() -> bool:
    # a bar only for a person watching, and not under -q
    return sys.stderr.isatty() and log.isEnabledFor(logging.INFO)


def _better(score: float, best: float) -> bool:
    return not math.isnan(score) and (math.isnan(best) or score > best)


def finetune(
    backbone: nn.Module,
    train_samples: Sequence[Any],
    val_samples: Sequence[Any],
    num_classes: int,
    settings: FinetuneSettings,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    workers: int = 0,
    absent: AbsentPolicy = "zero",
    label: str = "",
) -> dict[str, Any]:
    """Fine-tune a dilated copy of ``backbone`` with an FCN decoder for one seed and score it.

    ``backbone`` itself is left untouched. Returns ``final`` and ``best_on_val`` (see the module
    docstring; each a :meth:`ConfusionMatrix.compute` dict at original resolution plus
    ``epoch`` and ``miou_at_size``), ``history`` (one dict per epoch: ``epoch`` (1-based),
    ``lr``, ``loss``, ``miou``, ``miou_original``), ``output_stride`` and ``seconds``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    device = torch.device(device)
    s = settings
    torch.manual_seed(seed)
    net = dilate_last_stage(copy.deepcopy(backbone))
    model = FinetuneNet(net, num_classes, s.dilation, s.decoder_channels).to(device).train()
    optimizer = _optimizer(model, s)

    train_set = _TrainSet(train_samples, s, seed)
    sampler = _EpochSampler(len(train_set), seed)
    batch_size = min(s.batch_size, len(train_set))
    # a last batch of one image would break batch norm: drop it, as the repository's loader does
    loader_kwargs = dict(num_workers=workers, pin_memory=device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, sampler=sampler, drop_last=True, **loader_kwargs
    )
    val_loader = torch.utils.data.DataLoader(
        _ValSet(val_samples, s.val_size), batch_size=batch_size, collate_fn=_as_list, **loader_kwargs
    )

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    scores: dict[str, dict] = {}
    for epoch in range(s.epochs):
        lr = lr_at(s, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.epoch = epoch
        total, steps = 0.0, 0
        bar = tqdm(
            train_loader,
            desc=f"{label}epoch {epoch + 1}/{s.epochs}",
            leave=False,
            disable=not _show_progress(),
        )
        for images, masks in bar:
            masks = masks.to(device, non_blocking=True)
            if not bool((masks != IGNORE).any()):
                continue  # nothing to learn from, and the loss would be NaN
            x = normalize(images.to(device, non_blocking=True))
            with _autocast(device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            total += value
            steps += 1
            bar.set_postfix(loss=f"{value:.4f}")
        scores = evaluate(model, val_loader, num_classes, device, absent)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": total / steps if steps else math.nan,
            "miou": scores["at_size"]["miou"],
            "miou_original": scores["original"]["miou"],
        }
        history.append(record)
        log.info(
            "%sepoch %d/%d: lr %.3g, loss %.4f, val mIoU %.2f%% (original resolution %.2f%%)",
            label,
            epoch + 1,
            s.epochs,
            lr,
            record["loss"],
            100 * record["miou"],
            100 * record["miou_original"],
        )
        # the first epoch with the best score wins a tie; a NaN score (no pixel counted) never does
        if best is None or _better(record["miou"], best["miou_at_size"]):
            best = {**scores["original"], "epoch": epoch + 1, "miou_at_size": record["miou"]}
    assert best is not None  # epochs >= 1
    final = {**scores["original"], "epoch": s.epochs, "miou_at_size": history[-1]["miou"]}
    with torch.no_grad():
        probe = torch.zeros(1, 3, 64, 64, device=device)
        net.eval()
        stride = 64 // net(probe).shape[-1]
    return {
        "final": final,
        "best_on_val": best,
        "history": history,
        "output_stride": int(stride),
        "seconds": time.perf_counter() - t0,
    }


def _summary(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    mious = [r["miou"] for r in per_run]
    return {
        "miou": float(np.mean(mious)),
        "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else 0.0,
        "miou_per_seed": mious,
        "pixel_acc": float(np.mean([r["pixel_acc"] for r in per_run])),
        "iou_per_class": [float(v) for v in np.mean([r["iou_per_class"] for r in per_run], axis=0)],
        "epoch_per_seed": [r["epoch"] for r in per_run],
        "miou_at_size_per_seed": [r["miou_at_size"] for r in per_run],
    }


def run_finetune(
    backbone: nn.Module,
    train_samples: Sequence[Any],
    val_samples: Sequence[Any],
    num_classes: int,
    settings: FinetuneSettings,
    *,
    runs: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    workers: int = 0,
    absent: AbsentPolicy = "zero",
) -> dict[str, Any]:
    """:func:`finetune` with seeds ``seed .. seed + runs - 1``, summarised (fractions in [0, 1]).

    Returns ``miou``/``miou_std``/``miou_per_seed`` of the **final** epoch (mean, sample std and
    one per seed, at original resolution), ``final`` and ``best_on_val`` (the same summary for
    each, with ``pixel_acc``, ``iou_per_class`` (means), ``epoch_per_seed`` and
    ``miou_at_size_per_seed``), ``history`` (one list of epochs per seed), ``seeds``,
    ``output_stride``, ``num_classes``, ``num_train``, ``num_val``, ``eval_size`` and ``seconds``.
    """
    if runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {runs}")
    t0 = time.perf_counter()
    seeds = [seed + i for i in range(runs)]
    results = []
    for i, s in enumerate(seeds):
        label = f"run {i + 1}/{runs}, " if runs > 1 else ""
        results.append(
            finetune(
                backbone,
                train_samples,
                val_samples,
                num_classes,
                settings,
                seed=s,
                device=device,
                workers=workers,
                absent=absent,
                label=label,
            )
        )
    final = _summary([r["final"] for r in results])
    best = _summary([r["best_on_val"] for r in results])
    best["selection"] = (
        "epoch with the best validation mIoU at the evaluation size, chosen on the validation set it "
        "is scored on (optimistic)"
    )
    return {
        "miou": final["miou"],
        "miou_std": final["miou_std"],
        "miou_per_seed": final["miou_per_seed"],
        "final": final,
        "best_on_val": best,
        "history": [r["history"] for r in results],
        "seeds": seeds,
        "output_stride": results[0]["output_stride"],
        "num_classes": num_classes,
        "num_train": len(train_samples),
        "num_val": len(val_samples),
        "eval_size": settings.val_size,
        "absent": absent,
        "seconds": time.perf_counter() - t0,
    }

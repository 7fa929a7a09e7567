"""The supervised ceiling of the synthetic benchmark (evaluation spec C5.6).

The backbone a pre-training recipe trains, initialised exactly as pre-training initialises it,
is trained instead with per-pixel cross-entropy on the labelled scenes of the pre-training split:
a 1x1 convolution on its dense map, logits upsampled (bilinear) to the crop, ignore index 255.
Crops are drawn like pre-training's (random resized crops with the recipe's first view's scale and
output size, horizontal flips), the image resized bilinearly and the mask by nearest neighbour, so
labels stay exact. The trained backbone is then probed by the very protocols that probe the
self-supervised ones: every table can show how much of the gap between the random floor and this
ceiling a method closes.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from densessl.augment import normalize
from densessl.data.synthetic import SynthConfig, SyntheticScenes
from densessl.views.geometry import sample_crop

log = logging.getLogger(__name__)

__all__ = ["labelled_crops", "train_supervised"]


def labelled_crops(
    images: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random resized crop per image of uint8 ``images`` (B, 3, H, W) and the same crop of
    ``masks`` (B, H, W): the image bilinear, the mask nearest; both mirrored together half the
    time. Returns uint8 (B, 3, size, size) and int64 (B, size, size)."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    out_images, out_masks = [], []
    for image, mask in zip(images, masks, strict=True):
        box = sample_crop(height, width, scale, (3 / 4, 4 / 3), generator)
        crop = TF.resized_crop(image, box.top, box.left, box.height, box.width, [size, size], antialias=True)
        label = TF.resized_crop(
            mask[None], box.top, box.left, box.height, box.width, [size, size], InterpolationMode.NEAREST
        )[0]
        if torch.rand(1, generator=generator).item() < 0.5:
            crop, label = crop.flip(-1), label.flip(-1)
        out_images.append(crop)
        out_masks.append(label)
    return torch.stack(out_images), torch.stack(out_masks).long()


def train_supervised(
    backbone: nn.Module,
    scenes: SynthConfig,
    images: int,
    epochs: int,
    *,
    crop_size: int,
    crop_scale: tuple[float, float] = (0.3, 1.0),
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``backbone`` (in place) with per-pixel cross-entropy on the first ``images`` scenes
    of the ``train`` split for ``epochs``; returns it in eval mode and the training record
    (losses per epoch, pixel accuracy of the last epoch, seconds)."""
    if images < batch_size:
        raise ValueError(f"need at least one batch of {batch_size} images, got {images}")
    device = torch.device(device)
    started = time.perf_counter()
    data = SyntheticScenes(scenes, "train", images)
    rendered = [data[i] for i in range(images)]
    all_images = torch.from_numpy(np.stack([im for im, _ in rendered])).permute(0, 3, 1, 2).contiguous()
    all_masks = torch.from_numpy(np.stack([m for _, m in rendered]))
    num_classes = data.num_classes
    classifier = nn.Conv2d(backbone.out_channels, num_classes, 1).to(device)
    backbone.to(device).train()
    params = [*backbone.parameters(), *classifier.parameters()]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = images // batch_size
    total = steps_per_epoch * epochs
    generator = torch.Generator().manual_seed(seed)
    losses, step = [], 0
    correct = counted = 0
    for epoch in range(epochs):
        order = torch.randperm(images, generator=generator)
        epoch_loss = 0.0
        correct = counted = 0
        for b in range(steps_per_epoch):
            index = order[b * batch_size : (b + 1) * batch_size]
            crops, labels = labelled_crops(
                all_images[index], all_masks[index], crop_size, crop_scale, generator
            )
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            x, y = normalize(crops.to(device)), labels.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = classifier(backbone(x))
            logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            epoch_loss += float(loss.detach())
            valid = y != 255
            correct += int((logits.detach().argmax(1) == y)[valid].sum())
            counted += int(valid.sum())
        losses.append(epoch_loss / steps_per_epoch)
        log.info("supervised ceiling: epoch %d/%d, loss %.4f", epoch + 1, epochs, losses[-1])
    backbone.eval()
    return backbone, {
        "losses": losses,
        "train_pixel_acc": 100.0 * correct / max(counted, 1),
        "images": images,
        "epochs": epochs,
        "seconds": time.perf_counter() - started,
    }

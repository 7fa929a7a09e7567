"""Batched photometric augmentations and input normalisation (CPU or GPU tensors)."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Map a batch (B, 3, H, W) of uint8 or [0, 1] float images to ImageNet-normalised floats."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std

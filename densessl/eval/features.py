"""The frozen-feature cache every evaluation protocol trains on: the backbone runs once per image.

:func:`extract` resizes each image bilinearly (antialiased) to ``image_size`` (a square side, or
``(height, width)``), normalises it with the ImageNet statistics and runs the frozen backbone in
eval mode under ``no_grad`` (bf16 autocast on CUDA). It keeps, as asked:

- ``dense``: the dense maps (N, C, h, w) in float32;
- ``pooled``: average-pooled vectors (N, C * g * g) over a g x g grid (g = 1: global average;
  the OpenSelfSup VOC07 SVM uses g = 2 on res5, 8192-d for a ResNet-50);
- ``masks``: when the samples are ``(image, mask)`` pairs with a 2-D mask, the masks resized with
  nearest neighbour to the image size (labels, including 255, are only ever copied).

With ``cache_dir`` the result is also written there (``<key>.pt``) and read back on the next call
with the same backbone weights, samples and settings, so several commands can share one pass.

Vision Transformers. A ViT backbone's dense map is its grid of patch tokens after the final
norm, without the class token (:meth:`densessl.models.vit.ViTBackbone.forward`), so every dense
protocol reads patch tokens. Its ``pooled`` vectors are therefore means of patch tokens, for
every global protocol (k-NN, linear, VOC07 SVM); the class token is used by none: the losses of
densessl's methods (MGC's too) read only the patch-token map, so the class token's output is
never trained, and one rule (average of the dense map) serves ResNets and ViTs alike.

A ViT only takes inputs whose sides are multiples of its patch size: :func:`extract` resizes
each image straight to the nearest multiple (:func:`patch_aligned`, at least one patch) and logs
it, while masks stay at the size asked for (protocols upsample the feature map to the mask size
anyway).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from densessl.augment import normalize

log = logging.getLogger(__name__)

# Below this many batches a progress bar is noise rather than information.
_PROGRESS_MIN_BATCHES = 8


@dataclass
class FeatureSet:
    """Cached backbone outputs of one split (all on the CPU)."""

    dense: torch.Tensor | None
    pooled: torch.Tensor | None
    masks: torch.Tensor | None

    def __len__(self) -> int:
        ref = self.dense if self.dense is not None else self.pooled
        return 0 if ref is None else ref.shape[0]


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def patch_size_of(net: nn.Module) -> int | None:
    """The patch size of the ViT in ``net`` (the network itself, or a wrapper / method holding
    one), or None when it holds none (a ResNet takes any input size)."""
    patch = getattr(net, "patch_size", None)
    if isinstance(patch, int):
        return patch
    for module in net.modules():
        patch = getattr(module, "patch_size", None)
        # timm's PatchEmbed keeps a tuple; the backbone above it keeps the int
        if isinstance(patch, int) and hasattr(module, "patch_embed"):
            return patch
    return None


def pooling_name(backbone: nn.Module) -> str:
    """What a ``pooled`` vector of ``backbone`` is, for the protocols' JSON lines."""
    return "mean of patch tokens" if patch_size_of(backbone) else "global average"


def patch_aligned(size: int | Sequence[int], patch: int | None) -> tuple[int, int]:
    """``size`` as (height, width), each side rounded to the nearest multiple of ``patch``
    (at least one patch); unchanged when ``patch`` is None."""
    h, w = _size(size)
    if not patch:
        return h, w
    return max(patch, round(h / patch) * patch), max(patch, round(w / patch) * patch)


def _input_size(backbone: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """The size the images go into ``backbone`` at: ``size``, fitted to a ViT's patch grid."""
    patch = patch_size_of(backbone)
    aligned = patch_aligned(size, patch)
    if aligned != size:
        log.info(
            "%dx%d is not a multiple of the ViT's patch size %d: images are resized to %dx%d "
            "for the backbone (masks stay at %dx%d)",
            *size,
            patch,
            *aligned,
            *size,
        )
    return aligned


def resize_images(images: list[np.ndarray], size: int | Sequence[int]) -> torch.Tensor:
    """Stack uint8 HxWx3 arrays into a float (B, 3, h, w) batch in [0, 1]."""
    size = _size(size)
    tensors = []
    for img in images:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"images must be HxWx3 arrays, got shape {img.shape}")
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).float()
        if tuple(t.shape[-2:]) != size:
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
        tensors.append(t)
    # Antialiased bilinear has non-negative weights, so no overshoot beyond [0, 255] to clamp.
    return torch.cat(tensors).div_(255.0)


def nearest(masks: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Nearest-exact resize of a (B, H, W) integer label tensor, keeping its dtype."""
    # Labels up to 255 are exact in float32, so the round trip cannot alter a label value.
    resized = F.interpolate(masks[:, None].float(), size=_size(size), mode="nearest-exact")
    return resized[:, 0].to(masks.dtype)


def resize_masks(masks: list[np.ndarray], size: int | Sequence[int]) -> torch.Tensor:
    """Stack uint8 HxW label maps into a (B, h, w) uint8 tensor with nearest sampling."""
    size = _size(size)
    out = []
    for m in masks:
        if m.ndim != 2:
            raise ValueError(f"masks must be HxW arrays, got shape {m.shape}")
        t = torch.from_numpy(np.ascontiguousarray(m)).to(torch.uint8)
        if tuple(t.shape) != size:
            t = nearest(t[None], size)[0]
        out.append(t)
    return torch.stack(out)


def resize_center_crop(image: torch.Tensor, resize: int, size: int, nearest: bool = False) -> torch.Tensor:
    """Resize so the short side is ``resize``, then take the central ``size`` x ``size`` square."""
    mode = TF.InterpolationMode.NEAREST if nearest else TF.InterpolationMode.BILINEAR
    image = TF.resize(image, [resize], interpolation=mode, antialias=not nearest)
    return TF.center_crop(image, [size, size])


def _split(item: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """An image, and its mask when the sample carries a 2-D one."""
    if isinstance(item, tuple | list):
        image = item[0]
        mask = item[1] if len(item) > 1 and isinstance(item[1], np.ndarray) and item[1].ndim == 2 else None
        return image, mask
    return item, None


def weights_digest(backbone: nn.Module) -> str:
    """A short hash of a network's weights (names, shapes and values)."""
    h = hashlib.sha1()
    for name, tensor in backbone.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(backbone: nn.Module, samples: Sequence[Any], *settings: Any) -> str:
    """Key of a feature cache entry: weights (and a ViT's heads), the samples' identity and the
    extraction settings."""
    describe = getattr(samples, "describe", None)
    n = len(samples)
    probes = (0, n // 2, n - 1) if n else ()
    if describe is not None:
        names = [describe(i) for i in probes]
    else:  # no names: identify the samples by the content of a few of them
        images = [np.ascontiguousarray(_split(samples[i])[0]) for i in probes]
        names = [hashlib.sha1(image.tobytes()).hexdigest() for image in images]
    key: tuple[Any, ...] = (weights_digest(backbone), type(samples).__name__, n, names, settings)
    # a ViT's attention heads leave no trace in its weights (an MGC file read with 8 or 6 heads
    # holds the same tensors), yet they change every feature
    heads = [m.num_heads for m in backbone.modules() if hasattr(m, "patch_embed") and hasattr(m, "num_heads")]
    if heads:
        key += (("num_heads", *heads),)
    return hashlib.sha1(repr(key).encode()).hexdigest()[:20]


@torch.no_grad()
def extract(
    backbone: nn.Module,
    samples: Sequence[Any],
    image_size: int | Sequence[int],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dense: bool = True,
    pooled_grid: int | None = None,
    cache_dir: str | Path | None = None,
) -> FeatureSet:
    """Run the frozen backbone once over ``samples`` (images, or ``(image, mask|label)`` pairs).

    The backbone's train/eval mode is restored afterwards. See the module docstring.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("no samples to extract features from")
    if not dense and pooled_grid is None:
        raise ValueError("ask for dense maps, pooled vectors, or both")
    path = None
    if cache_dir is not None:
        key = cache_key(backbone, samples, _size(image_size), dense, pooled_grid)
        path = Path(cache_dir) / f"{key}.pt"
        if path.is_file():
            return FeatureSet(**torch.load(path, map_location="cpu"))
    device = torch.device(device)
    was_training = backbone.training
    backbone.to(device).eval()
    use_autocast = device.type == "cuda"
    n_batches = math.ceil(n / batch_size)
    input_size = _input_size(backbone, _size(image_size))
    dense_out: list[torch.Tensor] = []
    pooled_out: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    try:
        from tqdm.auto import tqdm

        disable = True if n_batches < _PROGRESS_MIN_BATCHES else None
        for start in tqdm(range(0, n, batch_size), total=n_batches, desc="features", disable=disable):
            items = [_split(samples[i]) for i in range(start, min(start + batch_size, n))]
            images = resize_images([image for image, _ in items], input_size)
            if all(mask is not None for _, mask in items):
                masks.append(resize_masks([mask for _, mask in items], image_size))
            x = normalize(images.to(device, non_blocking=True))
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_autocast):
                out = backbone(x)
            if out.ndim != 4:
                raise ValueError(f"backbone must return a (B, C, h, w) map, got shape {tuple(out.shape)}")
            out = out.float()
            if dense:
                dense_out.append(out.cpu())
            if pooled_grid is not None:
                pooled_out.append(F.adaptive_avg_pool2d(out, pooled_grid).flatten(1).cpu())
    finally:
        backbone.train(was_training)
    expected = getattr(backbone, "out_channels", None)
    channels = (dense_out or pooled_out)[0].shape[1] // (1 if dense_out else pooled_grid**2)
    if expected is not None and channels != expected:
        raise ValueError(f"backbone.out_channels={expected} but its output has {channels} channels")
    result = FeatureSet(
        dense=torch.cat(dense_out) if dense_out else None,
        pooled=torch.cat(pooled_out) if pooled_out else None,
        masks=torch.cat(masks) if len(masks) == n_batches else None,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"dense": result.dense, "pooled": result.pooled, "masks": result.masks}, tmp)
        tmp.replace(path)
    return result

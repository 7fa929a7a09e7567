"""What a backbone's dense features see: the first three principal components of the feature
map, shown as colours beside each image.

For any backbone :func:`densessl.export.load_backbone` reads (ResNets and ViTs, densessl
checkpoints, the reference layouts such as MGC's ``base_encoder`` / ``momentum_encoder``, and
exports; ``--encoder`` picks query or teacher):

1. every image is resized (short side) and centre-cropped, then run through the frozen backbone
   with :func:`densessl.eval.features.extract` (a ViT's map is its patch tokens without the class
   token; a side that is not a multiple of the patch size is resized to the nearest multiple);
2. each location's feature is L2-normalised and the principal components are fitted on the
   locations of **all** images together, so one colour means the same direction in every picture;
3. the three leading components are mapped to red, green and blue, each scaled to [0, 1] between
   its 1st and 99th percentile, and the map is enlarged (nearest) to the picture's size.

Regions the backbone tells apart get different colours: a quick look at how well a dense
pre-training separates objects from each other and from the background.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from densessl.errors import ConfigError
from densessl.eval.features import extract
from densessl.viz.prototypes import PrototypeImages, render_grid

#: the share of values clipped at each end of a component before scaling it to [0, 1]
CLIP_PERCENT = 1.0


def principal_components(dense: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """The ``k`` leading principal directions (k, C) of the L2-normalised locations of (N, C, h, w)
    features, fitted on every location of every image together, the locations' coordinates along
    them (N * h * w, k), and the share of the variance each explains (fewer channels or locations
    than ``k``: fewer directions)."""
    c = dense.shape[1]
    points = F.normalize(dense.float().permute(0, 2, 3, 1).reshape(-1, c), dim=1).double()
    points = points - points.mean(dim=0, keepdim=True)
    # the right singular vectors are the principal directions; full_matrices=False keeps it small
    _, singular, vh = torch.linalg.svd(points, full_matrices=False)
    k = min(k, vh.shape[0])
    variance = singular**2
    explained = (variance[:k] / variance.sum().clamp_min(1e-12)).tolist()
    return vh[:k], points @ vh[:k].t(), [float(e) for e in explained]


def pca_colours(dense: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(N, 3, h, w) colours in [0, 1] from (N, C, h, w) features, and the share of the variance
    each of the three components explains (fewer than three channels: the missing ones are 0)."""
    n, _, h, w = dense.shape
    _, projected, explained = principal_components(dense, 3)
    k = projected.shape[1]
    low = torch.quantile(projected, CLIP_PERCENT / 100, dim=0)
    high = torch.quantile(projected, 1 - CLIP_PERCENT / 100, dim=0)
    scaled = ((projected - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
    if k < 3:
        scaled = torch.cat([scaled, scaled.new_zeros(scaled.shape[0], 3 - k)], dim=1)
        explained += [0.0] * (3 - k)
    colours = scaled.reshape(n, h, w, 3).permute(0, 3, 1, 2).float()
    return colours, explained


def visualise_features(
    backbone: nn.Module,
    data: PrototypeImages,
    out: str | os.PathLike,
    tile: int = 112,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Draw each image beside the PCA colours of its features into ``out`` (PNG); the figures go
    to ``out`` + ``.json`` and are returned. ``about``: fields added to them (the weights...)."""
    if tile < 8:
        raise ConfigError(f"--tile must be at least 8 pixels, got {tile}")
    size = data.images[0].shape[0]
    features = extract(backbone, data.images, size, batch_size=batch_size, device=device).dense
    if features.shape[-2] * features.shape[-1] * len(data.images) < 3:
        raise ConfigError(f"a {tuple(features.shape[-2:])} feature map is too small for 3 components")
    colours, explained = pca_colours(features)
    tiles = []
    for image, colour in zip(data.images, colours, strict=True):
        picture = Image.fromarray(image).resize((tile, tile), Image.Resampling.BILINEAR)
        rgb = (colour.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        mapped = Image.fromarray(rgb).resize((tile, tile), Image.Resampling.NEAREST)
        tiles.append([np.asarray(picture), np.asarray(mapped)])
    canvas = render_grid(tiles, ["image", "features (PCA)"], [str(i + 1) for i in range(len(tiles))])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    summary: dict[str, Any] = {
        "out": str(out),
        **(about or {}),
        "images": len(data.images),
        "image_size": size,
        "feature_map": list(features.shape[-2:]),
        "channels": int(features.shape[1]),
        "explained_variance": explained,
        "names": data.names,
    }
    Path(f"{out}.json").write_text(json.dumps(summary, indent=2))
    return summary

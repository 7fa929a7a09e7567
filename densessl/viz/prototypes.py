"""What each learned prototype has come to mean: its top images, with its pixels tinted.

The recipe of the SlotCon authors' visualisation (evaluation spec A6), for any method whose
checkpoint has prototypes (:meth:`densessl.methods.base.Method.prototype_scores`):

1. every image is resized (short side) and centre-cropped, then passed through the exported
   (teacher) branch (a ViT's input resized to the nearest multiple of its patch size first);
   ``dots[n, k, h, w]`` is the cosine between prototype ``k`` and location ``(h, w)`` of image
   ``n``;
2. each location is assigned to its best prototype; image ``n`` scores for prototype ``k`` the
   mean of ``dots[n, k]`` over the locations assigned to ``k`` (0 when there are none);
3. for each of ``sampling`` prototypes drawn at random among those assigned somewhere, the
   ``topk`` best-scoring images are shown, with ``dots`` upsampled bilinearly to the picture,
   arg-maxed, and the prototype's region tinted red (alpha 0.6) and outlined; the rest of the
   picture is shown in dimmed grey so the region reads at a glance.

When the images come with ground-truth masks (the synthetic scenes) the routine also measures
the prototypes' purity: the share of pixels whose prototype's majority class is their own class
(many-to-one matching of prototypes to classes), ignoring label 255, beside its floor (the share
of the most frequent class, what a single prototype would score).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from densessl.augment import normalize
from densessl.data.base import DataError, ImageSource
from densessl.errors import ConfigError
from densessl.eval.features import patch_aligned, patch_size_of, resize_center_crop
from densessl.methods.base import Method

TINT = (255, 0, 0)
TINT_ALPHA = 0.6
#: outside the region: luma (ITU-R BT.601 weights) times DIM
LUMA = (0.299, 0.587, 0.114)
DIM = 0.6
IGNORE = 255


@dataclass
class PrototypeImages:
    """The images of a source after resize and centre crop, with masks when there are any."""

    images: list[np.ndarray]  # (S, S, 3) uint8
    names: list[str]
    masks: list[np.ndarray] | None  # (S, S) uint8 class labels, 255 ignored


def load_images(source: Any, size: int, resize: int, limit: int = 0) -> PrototypeImages:
    """Read ``source`` (an :class:`ImageSource`, or a dataset of ``(image, mask)`` pairs).

    Unreadable images raise :class:`~densessl.data.base.DataError` naming the file.
    """
    count = len(source) if not limit else min(limit, len(source))
    if count == 0:
        raise DataError("no images to visualise")
    images, names, masks = [], [], []
    with_masks = not isinstance(source, ImageSource)
    for i in tqdm(range(count), desc="reading images", unit="img", leave=False, disable=count < 200):
        if with_masks:
            image, mask = source[i]
            names.append(f"{getattr(source, 'split', 'image')}:{i}")
        else:
            image, mask = source.load(i), None
            names.append(source.describe(i))
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        images.append(resize_center_crop(tensor, resize, size).permute(1, 2, 0).numpy())
        if mask is not None:
            m = torch.from_numpy(np.asarray(mask, dtype=np.uint8))[None]
            masks.append(resize_center_crop(m, resize, size, nearest=True)[0].numpy())
    return PrototypeImages(images, names, masks if with_masks else None)


@torch.no_grad()
def compute_scores(
    method: Method, images: Sequence[np.ndarray], batch_size: int = 64, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``dots`` (N, K, h, w) in float32 on the CPU; raises ConfigError for a method without prototypes."""
    method = method.to(device).eval()
    # a ViT takes sides that are multiples of its patch size: the crops are resized to the
    # nearest multiple, and the scores still cover the whole picture
    aligned = patch_aligned(images[0].shape[:2], patch_size_of(method)) if len(images) else None
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="prototype scores", unit="batch", leave=False):
        batch = torch.from_numpy(np.stack(images[start : start + batch_size])).permute(0, 3, 1, 2)
        x = normalize(batch.to(device))
        if aligned is not None and tuple(x.shape[-2:]) != aligned:
            x = F.interpolate(x, size=aligned, mode="bilinear", align_corners=False, antialias=True)
        dots = method.prototype_scores(x)
        if dots is None:
            raise ConfigError(f"method '{method.name}' has no prototypes to visualise")
        out.append(dots.float().cpu())
    return torch.cat(out)


def prototype_image_scores(dots: torch.Tensor) -> torch.Tensor:
    """(N, K): mean of ``dots[n, k]`` over the locations of image ``n`` assigned to ``k`` (0 if none)."""
    k = dots.shape[1]
    assigned = F.one_hot(dots.argmax(dim=1), k).permute(0, 3, 1, 2).to(dots.dtype)  # (N, K, h, w)
    total = (dots * assigned).sum(dim=(2, 3))
    count = assigned.sum(dim=(2, 3))
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def choose_prototypes(dots: torch.Tensor, sampling: int, seed: int = 0) -> list[int]:
    """``sampling`` random prototypes among those that win at least one location, in index order."""
    used = torch.unique(dots.argmax(dim=1)).tolist()
    if sampling <= 0 or sampling >= len(used):
        return sorted(used)
    rng = np.random.default_rng(seed)
    return sorted(int(k) for k in rng.choice(used, size=sampling, replace=False))


def upsampled_assignment(dots: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size, size) argmax prototype after bilinear upsampling of the (N, K, h, w) scores."""
    maps = []
    for start in range(0, dots.shape[0], 64):
        chunk = F.interpolate(dots[start : start + 64], (size, size), mode="bilinear", align_corners=False)
        maps.append(chunk.argmax(dim=1))
    return torch.cat(maps)


def purity(assignment: np.ndarray, masks: np.ndarray, num_prototypes: int) -> float:
    """Many-to-one accuracy: each prototype takes the majority class of its (non-ignored) pixels."""
    keep = masks != IGNORE
    protos = assignment[keep].astype(np.int64)
    labels = masks[keep].astype(np.int64)
    if protos.size == 0:
        return float("nan")
    num_classes = int(labels.max()) + 1
    table = np.bincount(protos * num_classes + labels, minlength=num_prototypes * num_classes)
    table = table.reshape(num_prototypes, num_classes)
    return float(table.max(axis=1).sum() / protos.size)


def tint(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Blend ``TINT`` into ``region`` (alpha 0.6), outline it in full ``TINT``, and show the rest
    in dimmed grey, so the region stands out on colourful scenes."""
    out = image.astype(np.float32)
    grey = out @ np.asarray(LUMA, np.float32)
    out[~region] = (DIM * grey[~region])[:, None].repeat(3, axis=1)
    out[region] = (1 - TINT_ALPHA) * out[region] + TINT_ALPHA * np.asarray(TINT, np.float32)
    padded = np.pad(region, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out[region & ~interior] = TINT
    return out.round().astype(np.uint8)


def render_grid(
    tiles: list[list[np.ndarray]], headers: list[str], row_labels: list[str], gap: int = 4
) -> Image.Image:
    """Lay out ``tiles[row][col]`` (equal squares) under one header per column."""
    tile = tiles[0][0].shape[0]
    font = ImageFont.load_default()
    header_h, label_w = 16, 28
    rows, cols = len(tiles), len(tiles[0])
    width = label_w + cols * (tile + gap) + gap
    height = header_h + rows * (tile + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(headers):
        draw.text((label_w + gap + c * (tile + gap), 2), text, fill=(0, 0, 0), font=font)
    for r, row in enumerate(tiles):
        y = header_h + gap + r * (tile + gap)
        draw.text((4, y + tile // 2 - 6), row_labels[r], fill=(0, 0, 0), font=font)
        for c, picture in enumerate(row):
            canvas.paste(Image.fromarray(picture), (label_w + gap + c * (tile + gap), y))
    return canvas


def visualise_prototypes(
    method: Method,
    data: PrototypeImages,
    out: str | os.PathLike,
    topk: int = 5,
    sampling: int = 20,
    seed: int = 0,
    tile: int = 112,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Draw the prototype grid into ``out`` (PNG) and write its figures to ``out`` + ``.json``."""
    if topk < 1:
        raise ConfigError("--topk must be at least 1")
    dots = compute_scores(method, data.images, batch_size, device)
    n, k = dots.shape[:2]
    scores = prototype_image_scores(dots)
    chosen = choose_prototypes(dots, sampling, seed)
    size = data.images[0].shape[0]
    assignment = upsampled_assignment(dots, size).numpy()
    top = scores[:, chosen].topk(min(topk, n), dim=0).indices.t()  # (len(chosen), topk)

    tiles: list[list[np.ndarray]] = []
    for rank in range(top.shape[1]):
        row = []
        for column, proto in enumerate(chosen):
            index = int(top[column, rank])
            picture = tint(data.images[index], assignment[index] == proto)
            row.append(np.asarray(Image.fromarray(picture).resize((tile, tile), Image.Resampling.NEAREST)))
        tiles.append(row)
    canvas = render_grid(tiles, [f"#{p}" for p in chosen], [f"{r + 1}" for r in range(top.shape[1])])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)

    share = np.bincount(assignment.reshape(-1), minlength=k) / assignment.size
    summary: dict[str, Any] = {
        "out": str(out),
        "images": n,
        "image_size": size,
        "feature_map": list(dots.shape[2:]),
        "num_prototypes": k,
        "prototypes_used": int((share > 0).sum()),
        "prototypes": [
            {
                "index": proto,
                "pixel_share": float(share[proto]),
                "top": [
                    {"image": data.names[int(i)], "score": float(scores[int(i), proto])} for i in top[column]
                ],
            }
            for column, proto in enumerate(chosen)
        ],
    }
    if data.masks is not None:
        masks = np.stack(data.masks)
        labels = masks[masks != IGNORE]
        summary["purity"] = purity(assignment, masks, k)
        # what one prototype for everything would score: the share of the most frequent class
        floor = np.bincount(labels).max() / labels.size if labels.size else float("nan")
        summary["purity_floor"] = float(floor)
    Path(f"{out}.json").write_text(json.dumps(summary, indent=2))
    return summary


def prototype_source(spec: str, limit: int) -> Any:
    """``synthetic[:preset]`` (held-out ``val`` scenes, with masks), an image folder, or any
    ``folder:`` / ``coco:`` source of :func:`densessl.data.sources.parse_source`."""
    from densessl.data.sources import FolderSource, parse_source

    if spec == "synthetic" or spec.startswith("synthetic:"):
        from densessl.data.synthetic import SyntheticScenes, resolve_config

        preset = spec.split(":", 1)[1] if ":" in spec else None
        return SyntheticScenes(resolve_config(preset), "val", limit or 300)
    if os.path.isdir(spec):
        return FolderSource(spec)
    if ":" not in spec:
        raise DataError(f"--data {spec}: no such folder (or give synthetic[:preset], folder:DIR, coco:ROOT)")
    return parse_source(spec)


def default_sizes(config: Any, size: int | None, resize: int | None) -> tuple[int, int]:
    """The crop the model was pre-trained on (224 for the standard recipes), resized by 8/7."""
    if size is None:
        size = config.views[0].crop.size
    if resize is None:
        resize = math.ceil(size * 8 / 7)
    if resize < size:
        raise ConfigError(f"--resize {resize} is smaller than --size {size}")
    return size, resize

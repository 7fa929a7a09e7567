"""Which locations of two views a method treats as the same: lines between corresponding cells.

Two crops of one image are drawn with the recipe's own :class:`~densessl.views.sampler.ViewSampler`
(its first two views, a fixed seed per image; the geometric part only, without the colour
augmentation, so that the picture shows the scene), and the method's own correspondence code is
run on them with the weights of a training checkpoint (the heads included):

* DenseCL: :func:`densessl.methods.densecl.match_locations` between the query backbone's map of
  view 1 and the key backbone's map of view 2, one line per view-1 location to its argmax;
  similarity: the cosine of the two backbone vectors (the one the argmax maximised);
* SlotCon: the overlap boxes (:func:`~densessl.views.geometry.overlap_boxes_batch`) and
  :func:`densessl.methods.slotcon.align_to_overlap`, which re-samples both views on one grid over
  their overlap; the positions it samples are read by aligning maps of the locations' own
  coordinates with that same function, so the lines are where the group loss compares the views;
  similarity: the cosine of the student's aligned prototype scores of view 1 and the teacher's of
  view 2 (the pair the loss's first term compares);
* MGC: the pairs of every granularity from the method's
  :meth:`~densessl.methods.mgc.MGC.view_targets` (:func:`~densessl.views.geometry.mgc_correspondences`),
  padding left out; similarity: the cosine of the online prediction of the view-1 cell and the
  momentum projection of the view-2 cell (the pair the loss contrasts), one row per granularity.

The networks run in eval mode (batch norm on its running statistics). Each end of a line is also
mapped back into the source image: ``offset_cells``, the distance between the two ends there in
units of a view-1 cell, is 0 when both show the same source pixel. It is 0 for SlotCon's aligned
cells except within half a feature cell of a view's border (RoIAlign reads the edge value there,
and the line shows where it reads), under a cell for MGC's overlapping cells, and for DenseCL it
measures how far the learned argmax lands from where the geometry says it should.

MoCo-v2 and the revisited MoCo compare whole images (or crops), not locations: they have no
correspondences to draw.
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

from densessl.augment import normalize
from densessl.data.base import DataError, ImageSource
from densessl.errors import ConfigError
from densessl.methods.base import Method
from densessl.views.dataset import derive_seed
from densessl.views.geometry import ViewRecord
from densessl.views.sampler import ViewSampler, records_to_tensors

#: the methods whose loss pairs locations of two views, and what the picture calls their pairs
CORRESPONDING = {"densecl": "argmax matches", "slotcon": "aligned cells", "mgc": "pairs"}

#: viridis at five stops: dark blue (least similar) to yellow (most similar)
COLOUR_STOPS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


@dataclass
class CellPairs:
    """The corresponding locations of two views at one grid.

    ``points1`` / ``points2`` (P, 2) are (x, y) in [0, 1] of the displayed (possibly mirrored)
    view; ``index1`` / ``index2`` (P,) the flat index ``row * w + col`` of each end on its
    ``grid`` (h, w) (SlotCon: the position on the aligned grid, the same for both ends);
    ``similarity`` (P,) what the method compares there. ``regions``: the part of each view the
    pairs live in, (x1, y1, x2, y2) in the same coordinates (SlotCon's overlap boxes).
    """

    name: str
    grid: tuple[int, int]
    index1: torch.Tensor
    index2: torch.Tensor
    points1: torch.Tensor
    points2: torch.Tensor
    similarity: torch.Tensor
    regions: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def has_correspondences(method: Method) -> bool:
    """Whether ``method``'s loss pairs locations of two views (DenseCL, SlotCon, MGC)."""
    return method.name in CORRESPONDING


def require_correspondences(method: Method) -> None:
    """Raise the one-line ConfigError for a method whose loss pairs no locations."""
    if not has_correspondences(method):
        raise ConfigError(
            f"method '{method.name}' has no correspondences between views: its loss compares whole "
            "crops, not locations (DenseCL, SlotCon and MGC pair locations)"
        )


def sample_views(
    config: Any, image: np.ndarray, seed: int
) -> tuple[list[torch.Tensor], list[ViewRecord], tuple[int, int]]:
    """The recipe's first two crops of an (H, W, 3) uint8 image, drawn from ``seed``: the crops
    (3, S, S) uint8, their records and the image's (height, width)."""
    sampler = ViewSampler([v.crop for v in config.views])
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    crops, records = sampler(tensor, torch.Generator().manual_seed(seed))
    return crops[:2], records, (int(tensor.shape[1]), int(tensor.shape[2]))


def cell_centres(index: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(P, 2) (x, y) in [0, 1] of the centres of the cells ``index`` (row-major) of an (h, w) grid."""
    h, w = grid
    rows, cols = index // w, index % w
    return torch.stack([(cols.double() + 0.5) / w, (rows.double() + 0.5) / h], dim=1)


def source_points(points: torch.Tensor, record: ViewRecord) -> torch.Tensor:
    """(P, 2) displayed-view points in [0, 1] -> (x, y) in source-image pixels (flip undone)."""
    box = record.box
    x = 1.0 - points[:, 0] if record.flipped else points[:, 0]
    return torch.stack([box.left + x * box.width, box.top + points[:, 1] * box.height], dim=1)


def _batch(crop: torch.Tensor, device: torch.device) -> torch.Tensor:
    return normalize(crop.unsqueeze(0).to(device))


@torch.no_grad()
def densecl_pairs(method: Method, x1: torch.Tensor, x2: torch.Tensor) -> list[CellPairs]:
    from densessl.methods.densecl import match_locations

    q = method.encoder_q.backbone(x1).float()
    k = method.encoder_k.backbone(x2).float()
    matches = match_locations(q, k)[0].cpu()
    index1 = torch.arange(matches.numel())
    qn = F.normalize(q.flatten(2), dim=1)[0].cpu()
    kn = F.normalize(k.flatten(2), dim=1)[0].cpu()
    similarity = (qn * kn[:, matches]).sum(dim=0)
    grid = (int(q.shape[-2]), int(q.shape[-1]))
    points1, points2 = cell_centres(index1, grid), cell_centres(matches, grid)
    return [CellPairs(CORRESPONDING["densecl"], grid, index1, matches, points1, points2, similarity)]


@torch.no_grad()
def slotcon_pairs(
    method: Method, x1: torch.Tensor, x2: torch.Tensor, records: Sequence[ViewRecord]
) -> list[CellPairs]:
    from densessl.methods.slotcon import align_to_overlap
    from densessl.views.geometry import overlap_boxes_batch

    geometry = records_to_tensors(list(records[:2]))
    boxes, flips = geometry["boxes"], geometry["flips"]
    box1, box2, valid = overlap_boxes_batch(boxes[None, 0], flips[None, 0], boxes[None, 1], flips[None, 1])
    scores_q1 = method.grouping_q(method.projector_q(method.encoder_q(x1)))[1].float().cpu()
    scores_k2 = method.grouping_k(method.projector_k(method.encoder_k(x2)))[1].float().cpu()
    h, w = scores_q1.shape[-2:]
    if not bool(valid[0]):
        empty = torch.zeros(0, dtype=torch.long)
        none = torch.zeros(0, 2, dtype=torch.float64)
        return [CellPairs(CORRESPONDING["slotcon"], (h, w), empty, empty, none, none, torch.zeros(0))]
    flip1, flip2 = flips[None, 0], flips[None, 1]
    similarity = F.cosine_similarity(
        align_to_overlap(scores_q1, box1, flip1), align_to_overlap(scores_k2, box2, flip2), dim=1
    ).flatten()
    # a map whose values are the locations' own (x, y) centres in [0, 1]: RoIAlign interpolates
    # it bilinearly, which returns the point each aligned cell was sampled at
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    where = torch.stack([xs, ys])[None].float()
    points1 = align_to_overlap(where, box1, flip1)[0].flatten(1).t().double()
    points2 = align_to_overlap(where, box2, flip2)[0].flatten(1).t().double()
    index = torch.arange(h * w)
    regions = (tuple(box1[0].tolist()), tuple(box2[0].tolist()))
    return [CellPairs(CORRESPONDING["slotcon"], (h, w), index, index, points1, points2, similarity, regions)]


@torch.no_grad()
def mgc_pairs(
    method: Method,
    config: Any,
    x1: torch.Tensor,
    x2: torch.Tensor,
    records: Sequence[ViewRecord],
    image_size: tuple[int, int],
) -> list[CellPairs]:
    from densessl.methods.mgc import select_cells

    targets = type(method).view_targets(config)(list(records), image_size)
    online1 = method.base_encoder(x1)
    momentum2 = method.momentum_encoder(x2)
    crop, patch = config.views[0].crop.size, config.model.patch_size
    out = []
    for g in config.method.groupings:
        keep = targets[f"{g.name}.weight"] > 0  # the rest is padding (index 0 / 0)
        index1, index2 = targets[f"{g.name}.index1"][keep], targets[f"{g.name}.index2"][keep]
        side = crop // (g.tokens * patch)
        similarity = torch.zeros(0)
        if index1.numel():
            p1 = method.predictors[g.name](
                method.projectors[g.name](select_cells(online1, g.tokens, index1[None].to(x1.device)))
            )
            z2 = method.momentum_projectors[g.name](
                select_cells(momentum2, g.tokens, index2[None].to(x2.device))
            )
            similarity = F.cosine_similarity(p1.float(), z2.float(), dim=1).cpu()
        grid = (side, side)
        points1, points2 = cell_centres(index1, grid), cell_centres(index2, grid)
        out.append(CellPairs(f"{g.name} pairs", grid, index1, index2, points1, points2, similarity))
    return out


def method_pairs(
    method: Method,
    config: Any,
    crops: Sequence[torch.Tensor],
    records: Sequence[ViewRecord],
    image_size: tuple[int, int],
    device: str | torch.device = "cpu",
) -> list[CellPairs]:
    """The method's corresponding locations between ``crops[0]`` and ``crops[1]`` (uint8 (3, S, S),
    drawn as ``records`` from an image of ``image_size``); raises ConfigError for a method whose
    loss pairs no locations."""
    require_correspondences(method)
    device = torch.device(device)
    method = method.to(device).eval()
    x1, x2 = _batch(crops[0], device), _batch(crops[1], device)
    if method.name == "densecl":
        return densecl_pairs(method, x1, x2)
    if method.name == "slotcon":
        return slotcon_pairs(method, x1, x2, records)
    return mgc_pairs(method, config, x1, x2, records, image_size)


def offset_cells(pairs: CellPairs, records: Sequence[ViewRecord]) -> torch.Tensor:
    """(P,) distance between the two ends of each pair in the source image, in view-1 cells."""
    a, b = source_points(pairs.points1, records[0]), source_points(pairs.points2, records[1])
    cell = math.sqrt(records[0].box.width * records[0].box.height / (pairs.grid[0] * pairs.grid[1]))
    return (a - b).norm(dim=1) / cell


def colour(value: float, low: float, high: float) -> tuple[int, int, int]:
    """``value`` on the viridis ramp between ``low`` and ``high``."""
    t = 0.5 if high <= low else min(max((value - low) / (high - low), 0.0), 1.0)
    position = t * (len(COLOUR_STOPS) - 1)
    i = min(int(position), len(COLOUR_STOPS) - 2)
    f = position - i
    a, b = COLOUR_STOPS[i], COLOUR_STOPS[i + 1]
    return tuple(round(a[c] + f * (b[c] - a[c])) for c in range(3))  # type: ignore[return-value]


def shown(count: int, max_lines: int) -> np.ndarray:
    """Indices of the pairs drawn: all of them, or ``max_lines`` evenly spread."""
    if max_lines <= 0 or count <= max_lines:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, max_lines).round().astype(int))


def _grid_lines(draw: ImageDraw.ImageDraw, x0: int, tile: int, grid: tuple[int, int]) -> None:
    h, w = grid
    for c in range(1, w):
        x = x0 + c * tile / w
        draw.line([(x, 0), (x, tile)], fill=(255, 255, 255, 70))
    for r in range(1, h):
        y = r * tile / h
        draw.line([(x0, y), (x0 + tile, y)], fill=(255, 255, 255, 70))


def draw_pairs(
    crop1: np.ndarray,
    crop2: np.ndarray,
    pairs: CellPairs,
    tile: int,
    gap: int,
    low: float,
    high: float,
    max_lines: int = 0,
) -> Image.Image:
    """View 1 and view 2 side by side (``tile`` px each, ``gap`` apart) with a line per pair from
    cell centre to cell centre, coloured by similarity between ``low`` and ``high``."""
    row = Image.new("RGB", (2 * tile + gap, tile), (255, 255, 255))
    for x0, crop in ((0, crop1), (tile + gap, crop2)):
        row.paste(Image.fromarray(crop).resize((tile, tile), Image.Resampling.BILINEAR), (x0, 0))
    overlay = Image.new("RGBA", row.size, (0, 0, 0, 0))
    faint = ImageDraw.Draw(overlay)
    for x0 in (0, tile + gap):
        _grid_lines(faint, x0, tile, pairs.grid)
    if pairs.regions is not None:
        for x0, (x1, y1, x2, y2) in zip((0, tile + gap), pairs.regions, strict=True):
            faint.rectangle(
                [x0 + x1 * tile, y1 * tile, x0 + x2 * tile, y2 * tile], outline=(255, 255, 255, 220)
            )
    row = Image.alpha_composite(row.convert("RGBA"), overlay).convert("RGB")
    draw = ImageDraw.Draw(row)
    radius = max(2, tile // 80)
    for i in shown(len(pairs.similarity), max_lines):
        a = (float(pairs.points1[i, 0]) * tile, float(pairs.points1[i, 1]) * tile)
        b = (tile + gap + float(pairs.points2[i, 0]) * tile, float(pairs.points2[i, 1]) * tile)
        fill = colour(float(pairs.similarity[i]), low, high)
        # a dark edge keeps the bright end of the ramp readable on light scenes
        draw.line([a, b], fill=(0, 0, 0), width=3)
        draw.line([a, b], fill=fill, width=1)
        for x, y in (a, b):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(0, 0, 0))
    return row


def colour_bar(width: int, low: float, high: float, label: str) -> Image.Image:
    """The ramp from ``low`` to ``high`` with both values and ``label`` written beside it."""
    font = ImageFont.load_default()
    bar = Image.new("RGB", (width, 30), (255, 255, 255))
    draw = ImageDraw.Draw(bar)
    left, right = 40, max(width - 40, 41)
    for x in range(left, right):
        draw.line([(x, 2), (x, 12)], fill=colour(low + (x - left) / (right - left) * (high - low), low, high))
    draw.text((2, 2), f"{low:.2f}", fill=(0, 0, 0), font=font)
    draw.text((right + 4, 2), f"{high:.2f}", fill=(0, 0, 0), font=font)
    draw.text((left, 16), label, fill=(0, 0, 0), font=font)
    return bar


def full_image(source: Any, index: int) -> tuple[np.ndarray, str]:
    """Image ``index`` of ``source`` uncropped ((H, W, 3) uint8), and its name."""
    if isinstance(source, ImageSource):
        return np.asarray(source.load(index)), source.describe(index)
    return np.asarray(source[index][0]), f"{getattr(source, 'split', 'image')}:{index}"


def visualise_matches(
    method: Method,
    config: Any,
    source: Any,
    out: str | os.PathLike,
    limit: int = 3,
    seed: int = 0,
    tile: int = 192,
    max_lines: int = 100,
    device: str | torch.device = "cpu",
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Draw the correspondences of two views of each of the first ``limit`` images of ``source``
    into ``out`` (PNG), a row per image and grid; the pairs go to ``out`` + ``.json`` and the
    figures are returned."""
    if tile < 16:
        raise ConfigError(f"--tile must be at least 16 pixels, got {tile}")
    require_correspondences(method)
    count = min(limit, len(source)) if limit > 0 else len(source)
    if count == 0:
        raise DataError("no images to draw views of")
    rows: list[tuple[str, np.ndarray, np.ndarray, CellPairs]] = []
    images: list[dict[str, Any]] = []
    offsets_of: dict[str, list[torch.Tensor]] = {}
    for i in range(count):
        image, name = full_image(source, i)
        crops, records, size = sample_views(config, image, derive_seed(seed, i))
        found = method_pairs(method, config, crops, records, size, device)
        pictures = [c.permute(1, 2, 0).numpy() for c in crops]
        entry: dict[str, Any] = {
            "name": name,
            "image_size": list(size),
            "views": [
                {
                    "box": list(records_to_tensors(records[:2])["boxes"][v].tolist()),
                    "flipped": records[v].flipped,
                }
                for v in range(2)
            ],
            "grids": [],
        }
        for pairs in found:
            offsets = offset_cells(pairs, records)
            offsets_of.setdefault(pairs.name, []).append(offsets)
            rows.append((f"{i + 1}: {name}, {pairs.name} ({len(pairs.similarity)})", *pictures, pairs))
            entry["grids"].append(
                {
                    "name": pairs.name,
                    "grid": list(pairs.grid),
                    "median_offset_cells": float(offsets.median()) if offsets.numel() else None,
                    "mean_similarity": float(pairs.similarity.mean()) if offsets.numel() else None,
                    "pairs": [
                        {
                            "cell1": int(pairs.index1[p]),
                            "cell2": int(pairs.index2[p]),
                            "point1": [round(float(v), 4) for v in pairs.points1[p]],
                            "point2": [round(float(v), 4) for v in pairs.points2[p]],
                            "similarity": float(pairs.similarity[p]),
                            "offset_cells": float(offsets[p]),
                        }
                        for p in range(len(pairs.similarity))
                    ],
                }
            )
        images.append(entry)

    values = torch.cat([r[3].similarity.float() for r in rows])
    low, high = (float(values.min()), float(values.max())) if values.numel() else (0.0, 1.0)
    gap, header = max(16, tile // 6), 16
    width = 2 * tile + gap + 8
    canvas = Image.new("RGB", (width, len(rows) * (tile + header + 6) + 36), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, (label, crop1, crop2, pairs) in enumerate(rows):
        y = r * (tile + header + 6)
        draw.text((4, y + 2), label, fill=(0, 0, 0), font=font)
        canvas.paste(draw_pairs(crop1, crop2, pairs, tile, gap, low, high, max_lines), (4, y + header))
    canvas.paste(colour_bar(width, low, high, "cosine similarity"), (0, len(rows) * (tile + header + 6) + 4))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    summary: dict[str, Any] = {
        "out": str(out),
        **(about or {}),
        "method": method.name,
        "seed": seed,
        "images": count,
        "similarity_range": [low, high],
        "pairs": {name: int(sum(o.numel() for o in parts)) for name, parts in offsets_of.items()},
        # over every pair of every image: 0 when the two ends show the same source pixel
        "median_offset_cells": {
            name: float(torch.cat(parts).median()) if sum(o.numel() for o in parts) else None
            for name, parts in offsets_of.items()
        },
    }
    Path(f"{out}.json").write_text(json.dumps({**summary, "pictures": images}, indent=2))
    return summary

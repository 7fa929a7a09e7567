"""Training curves of several runs in one picture, from each run directory's ``metrics.jsonl``.

Every key that matches one of the patterns (by default the losses, the learning rate, the
teacher momentum, the online probe's figures and the collapse indicators: ``loss``, ``loss_*``,
``lr``, ``momentum``, ``probe_*``, ``collapse_*``) gets its own panel, with one line per run
against the step (or the epoch). A run that never logged a key is absent from its panel; lines
that do not parse (a write cut short by a kill) and values that are not finite are left out and
counted. The plotted numbers go to the picture's name + ``.json``, so the figures can be read
without the picture.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from densessl.data.base import DataError
from densessl.errors import ConfigError
from densessl.eval.report import PALETTE

DEFAULT_KEYS = ("loss", "loss_*", "lr", "momentum", "probe_*", "collapse_*")
#: the axis columns every line carries, never plotted as a curve
AXES = ("step", "epoch")


def metrics_file(run: str | os.PathLike) -> Path:
    """A run directory's ``metrics.jsonl`` (or the file itself when given)."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{run}: no metrics.jsonl (give a run directory of `densessl pretrain`)")
    return path


def read_metrics(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The records of a ``metrics.jsonl`` and how many lines could not be read."""
    records, bad = [], 0
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def select_keys(records: list[list[dict[str, Any]]], patterns: tuple[str, ...] | list[str]) -> list[str]:
    """The numeric keys of any run that match ``patterns``, in pattern order, then first-seen order."""
    seen: list[str] = []
    for run in records:
        for record in run:
            for key, value in record.items():
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                if key not in AXES and numeric and key not in seen:
                    seen.append(key)
    keys: list[str] = []
    for pattern in patterns:
        keys += [k for k in seen if fnmatch.fnmatchcase(k, pattern) and k not in keys]
    return keys


def series(records: list[dict[str, Any]], key: str, x: str = "step") -> tuple[list[list[float]], int]:
    """``[[x, value], ...]`` of ``key``, sorted by ``x`` (the last record of a repeated ``x`` wins),
    and the number of non-finite values left out."""
    points: dict[float, float] = {}
    dropped = 0
    for record in records:
        value, where = record.get(key), record.get(x)
        if value is None or where is None or isinstance(value, bool):
            continue
        if not math.isfinite(float(value)):
            dropped += 1
            continue
        points[float(where)] = float(value)
    return [[k, points[k]] for k in sorted(points)], dropped


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round values spanning [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step) * step
    return [start + i * step for i in range(int((high - start) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def draw_panel(
    title: str, lines: list[tuple[list[list[float]], tuple[int, int, int]]], width: int, height: int
) -> Image.Image:
    """One panel: ``title`` above axes with each ``(points, colour)`` as a polyline."""
    font = ImageFont.load_default()
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    left, top, right, bottom = 52, 18, width - 10, height - 22
    draw.text((left, 2), title, fill=(0, 0, 0), font=font)
    xs = [p[0] for points, _ in lines for p in points]
    ys = [p[1] for points, _ in lines for p in points]
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    if not xs:
        draw.text((left + 8, top + 8), "no values", fill=(120, 120, 120), font=font)
        return panel
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:  # a constant (a fixed momentum): a band around it
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    margin = (y1 - y0) * 0.05
    y0, y1 = y0 - margin, y1 + margin

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for tick in nice_ticks(y0, y1):
        _, y = at(x0, tick)
        draw.line([(left, y), (right, y)], fill=(230, 230, 230))
        draw.text((2, y - 6), _label(tick), fill=(0, 0, 0), font=font)
    for tick in nice_ticks(min(xs), max(xs)):
        x, _ = at(tick, y0)
        draw.line([(x, bottom), (x, bottom + 3)], fill=(0, 0, 0))
        draw.text((x - 8, bottom + 6), _label(tick), fill=(0, 0, 0), font=font)
    for points, fill in lines:
        xy = [at(x, y) for x, y in points]
        if len(xy) == 1:
            (x, y) = xy[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=fill)
        else:
            draw.line(xy, fill=fill, width=2)
    return panel


def run_labels(runs: list[str], labels: list[str] | None) -> list[str]:
    """``labels``, or each run directory's name (its full path where two names are equal)."""
    if labels is not None:
        if len(labels) != len(runs):
            raise ConfigError(f"--labels: {len(labels)} labels for {len(runs)} runs")
        return list(labels)
    names = [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in runs]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, runs, strict=True)]


def plot_curves(
    runs: list[str | os.PathLike],
    out: str | os.PathLike,
    keys: tuple[str, ...] | list[str] = DEFAULT_KEYS,
    x: str = "step",
    labels: list[str] | None = None,
    columns: int = 3,
    panel: tuple[int, int] = (320, 200),
) -> dict[str, Any]:
    """Draw one panel per key matching ``keys``, one line per run, into ``out`` (PNG); the plotted
    numbers go to ``out`` + ``.json`` and a summary is returned."""
    if x not in AXES:
        raise ConfigError(f"--x must be one of {', '.join(AXES)}, got {x}")
    if not runs:
        raise ConfigError("give at least one run directory")
    files = [metrics_file(r) for r in runs]
    names = run_labels([str(r) for r in runs], labels)
    read = [read_metrics(f) for f in files]
    records = [r for r, _ in read]
    chosen = select_keys(records, keys)
    if not chosen:
        raise DataError(f"no key of {', '.join(map(str, files))} matches {' '.join(keys)}")
    plotted: dict[str, dict[str, list[list[float]]]] = {}
    dropped: dict[str, int] = {}
    for name, run in zip(names, records, strict=True):
        for key in chosen:
            points, lost = series(run, key, x)
            if points:
                plotted.setdefault(key, {})[name] = points
            dropped[name] = dropped.get(name, 0) + lost

    font = ImageFont.load_default()
    columns = max(1, min(columns, len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    legend = 16 * len(names) + 8
    width, height = panel
    canvas = Image.new("RGB", (columns * width, rows * height + legend + 14), (255, 255, 255))
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    for i, key in enumerate(chosen):
        lines = [(points, colours[name]) for name, points in plotted.get(key, {}).items()]
        canvas.paste(draw_panel(key, lines, width, height), ((i % columns) * width, (i // columns) * height))
    draw = ImageDraw.Draw(canvas)
    draw.text((52, rows * height), f"x: {x}", fill=(0, 0, 0), font=font)
    for r, name in enumerate(names):
        y = rows * height + 16 + 16 * r
        draw.rectangle([52, y, 62, y + 10], fill=colours[name])
        draw.text((68, y - 1), name, fill=(0, 0, 0), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    summary: dict[str, Any] = {
        "out": str(out),
        "x": x,
        "keys": chosen,
        "runs": [
            {
                "label": name,
                "metrics": str(f),
                "records": len(run),
                "unreadable_lines": bad,
                "non_finite": dropped[name],
            }
            for name, f, run, (_, bad) in zip(names, files, records, read, strict=True)
        ],
    }
    Path(f"{out}.json").write_text(json.dumps({**summary, "series": plotted}, indent=2))
    return summary

"""One comparison table (Markdown) and one bar chart (PNG) from the results of several runs.

Every ``densessl eval`` command given ``--save RUN_DIR`` appends its JSON result as one line to
``RUN_DIR/eval.jsonl``; ``densessl demo`` writes ``summary.json``. :func:`collect` reads both
kinds from each run directory, :func:`markdown_table` lays out one row per run and one column
per protocol and variant (its headline figure, in percent), and :func:`bar_chart` draws the
same numbers.
When a run holds several results of one protocol (e.g. two datasets), the column is named
``protocol (data)``; a repeated identical command keeps its latest result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from densessl.errors import DataError

#: protocol -> headline key; every eval command prints its scores in percent
HEADLINES: dict[str, str] = {
    "seg-probe": "miou",
    "seg-nn": "miou",
    "seg-cluster": "miou",
    "svm-voc07": "map",
    "knn": "top1",
    "linear": "top1",
    "davis": "J&F-Mean",
    # the final epoch's mIoU; the best epoch chosen on the validation set is not a headline
    "seg-finetune": "miou",
}
#: protocols whose lines saved before ``unit`` was written hold fractions
FRACTION_BEFORE_UNIT = frozenset({"seg-probe", "seg-nn", "seg-cluster"})
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def headline(result: dict[str, Any]) -> float | None:
    """The headline figure of one result line, in percent (None when it has none)."""
    protocol = result.get("protocol")
    if protocol not in HEADLINES:
        return None
    value = result.get(HEADLINES[protocol])
    if value is None:
        return None
    legacy = protocol in FRACTION_BEFORE_UNIT and "unit" not in result
    return float(value) * (100.0 if legacy else 1.0)


def _protocol(result: dict[str, Any]) -> str:
    """The protocol's name, with its variant when it has several (``svm-voc07 openselfsup``)."""
    protocol = str(result.get("protocol", "?"))
    return f"{protocol} {result['variant']}" if result.get("variant") else protocol


def collect(run_dirs: list[str | Path]) -> dict[str, dict[str, float]]:
    """{run name: {column: percent}} from each directory's ``eval.jsonl`` and ``summary.json``."""
    table: dict[str, dict[str, float]] = {}
    for run in map(Path, run_dirs):
        if not run.is_dir():
            raise DataError(f"run directory not found: {run}")
        rows: dict[str, float] = {}
        lines = run / "eval.jsonl"
        results = []
        if lines.is_file():
            for number, line in enumerate(lines.read_text().splitlines(), start=1):
                if line.strip():
                    try:
                        results.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{lines}:{number} is not a JSON line: {exc}") from None
        per_protocol_data: dict[str, set[str]] = {}
        for r in results:
            per_protocol_data.setdefault(_protocol(r), set()).add(str(r.get("data", "")))
        for r in results:
            value = headline(r)
            if value is None:
                continue
            protocol = _protocol(r)
            column = protocol if len(per_protocol_data[protocol]) == 1 else f"{protocol} ({r.get('data')})"
            rows[column] = value
        summary = run / "summary.json"
        if summary.is_file():
            demo = json.loads(summary.read_text())
            for row in demo.get("results", []):
                name = f"{run.name}: {row['method']}"
                table[name] = {"demo seg-probe": float(row["miou"])}
        if rows:
            table[run.name] = rows
        elif not summary.is_file():
            raise DataError(f"{run} holds no eval.jsonl or summary.json (run densessl eval ... --save {run})")
    return table


def columns_of(table: dict[str, dict[str, float]]) -> list[str]:
    seen: list[str] = []
    for row in table.values():
        seen.extend(c for c in row if c not in seen)
    return seen


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    """One row per run, one column per protocol; missing figures shown as ``-``."""
    columns = columns_of(table)
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in table.items():
        cells = [f"{row[c]:.2f}" if c in row else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(
    table: dict[str, dict[str, float]],
    out: str | Path,
    bar: int = 18,
    height: int = 220,
    errors: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Grouped bars: one group per protocol, one colour per run, values in percent (0-100);
    ``errors`` (same layout, half-widths) draws a whisker on each bar."""
    columns = columns_of(table)
    runs = list(table)
    font = ImageFont.load_default()
    group = max(len(runs) * bar + 24, 84)  # wide enough for a label of about 13 characters
    legend_h = 16 * len(runs) + 8
    width = 50 + max(1, len(columns)) * group
    canvas = Image.new("RGB", (width, height + 72 + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    top, left = 10, 40
    for tick in range(0, 101, 20):
        y = top + height - tick * height / 100
        draw.line([(left, y), (width - 5, y)], fill=(225, 225, 225))
        draw.text((5, y - 6), f"{tick:3d}", fill="black", font=font)
    for g, column in enumerate(columns):
        x0 = left + 12 + g * group
        for r, name in enumerate(runs):
            value = table[name].get(column)
            if value is None:
                continue
            x = x0 + r * bar
            y = top + height - max(0.0, min(value, 100.0)) * height / 100
            draw.rectangle([x, y, x + bar - 3, top + height], fill=PALETTE[r % len(PALETTE)])
            half = (errors or {}).get(name, {}).get(column)
            if half:
                ys = [top + height - max(0.0, min(value + d, 100.0)) * height / 100 for d in (-half, half)]
                mid = x + (bar - 3) / 2
                draw.line([(mid, ys[0]), (mid, ys[1])], fill="black")
                draw.line([(mid - 3, ys[0]), (mid + 3, ys[0])], fill="black")
                draw.line([(mid - 3, ys[1]), (mid + 3, ys[1])], fill="black")
        for line, text in enumerate(column.split(" ", 1)):  # "svm-voc07" / "openselfsup" on two lines
            draw.text((x0, top + height + 6 + 12 * line), text, fill="black", font=font)
    for r, name in enumerate(runs):
        y = top + height + 42 + 16 * r
        draw.rectangle([left, y, left + 10, y + 10], fill=PALETTE[r % len(PALETTE)])
        draw.text((left + 16, y - 1), name, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out

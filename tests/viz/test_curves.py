"""Training curves: the keys chosen, the numbers plotted (as written beside the picture), the
lines drawn in each run's colour, and the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from densessl.cli import main
from densessl.data.base import DataError
from densessl.eval.report import PALETTE
from densessl.viz.curves import draw_panel, nice_ticks, plot_curves, select_keys, series


def write_run(path, records, extra: str = "") -> None:
    path.mkdir(parents=True)
    lines = [json.dumps(r) for r in records]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + extra)


def two_runs(tmp_path):
    a = [
        {"step": s, "epoch": s / 4, "loss": 5.0 - s, "loss_dense": 2.0, "lr": 0.1 * s, "images_per_s": 90.0}
        for s in (1, 2, 3, 4)
    ]
    a.append({"step": 4, "probe_miou": 12.5})  # the online probe logs on lines of its own
    b = [{"step": s, "epoch": s / 2, "loss": 3.0 + s, "momentum": 0.99, "lr": 0.2} for s in (1, 2)]
    b.append({"step": 3, "loss": float("nan"), "momentum": 0.99})
    b.append({"step": 2, "loss": 4.5})  # logged again after a resume: the last line wins
    write_run(tmp_path / "a", a, extra='{"step": 5, "loss": 0.')  # cut short by a kill
    write_run(tmp_path / "b", b)
    return tmp_path / "a", tmp_path / "b"


def test_default_keys_are_losses_lr_momentum_and_probe_in_that_order():
    records = [
        [{"step": 1, "probe_miou": 1.0, "lr": 0.1, "loss_slot": 1.0, "images_per_s": 5.0, "loss": 2.0}]
    ]
    records.append([{"step": 1, "momentum": 0.9, "loss_group": 1.0, "flag": True}])
    keys = select_keys(records, ("loss", "loss_*", "lr", "momentum", "probe_*"))
    assert keys == ["loss", "loss_slot", "loss_group", "lr", "momentum", "probe_miou"]


def test_series_sorts_by_step_keeps_the_last_repeat_and_drops_non_finite_values():
    records = [{"step": 3, "loss": 1.0}, {"step": 1, "loss": 3.0}, {"step": 2, "loss": math.inf}]
    records += [{"step": 1, "loss": 2.5}, {"step": 4}]
    assert series(records, "loss") == ([[1.0, 2.5], [3.0, 1.0]], 1)


def test_nice_ticks_are_round_and_inside_the_range():
    assert nice_ticks(0.0, 1.0) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    ticks = nice_ticks(0.987, 1.0013)
    assert all(0.987 <= t <= 1.0013 for t in ticks) and 2 <= len(ticks) <= 6


def test_curves_of_two_runs_write_the_plotted_numbers_and_draw_each_run(tmp_path):
    a, b = two_runs(tmp_path)
    out = tmp_path / "c.png"
    summary = plot_curves([a, b], out, columns=2)
    assert summary["keys"] == ["loss", "loss_dense", "lr", "momentum", "probe_miou"]
    assert [r["label"] for r in summary["runs"]] == ["a", "b"]
    assert summary["runs"][0]["unreadable_lines"] == 1 and summary["runs"][1]["non_finite"] == 1
    saved = json.loads((tmp_path / "c.png.json").read_text())
    assert saved["series"]["loss"] == {"a": [[1, 4], [2, 3], [3, 2], [4, 1]], "b": [[1, 4], [2, 4.5]]}
    assert saved["series"]["probe_miou"] == {"a": [[4, 12.5]]} and "a" not in saved["series"]["momentum"]
    with Image.open(out) as png:
        pixels = np.asarray(png.convert("RGB"))
    # 5 panels in 2 columns: 3 rows of 200 px above the legend
    assert pixels.shape[1] == 2 * 320 and pixels.shape[0] > 3 * 200
    top_left = pixels[:200, :320].reshape(-1, 3)  # the loss panel holds both runs' lines
    for colour in PALETTE[:2]:
        assert (top_left == colour).all(axis=1).sum() > 20
    momentum = pixels[200:400, 320:].reshape(-1, 3)  # row 2, column 2: only run b logged it
    assert (momentum == PALETTE[1]).all(axis=1).sum() > 20 and not (momentum == PALETTE[0]).all(axis=1).any()


def test_epoch_axis_and_chosen_keys(tmp_path):
    a, b = two_runs(tmp_path)
    summary = plot_curves([a, b], tmp_path / "e.png", keys=["lr"], x="epoch", labels=["first", "second"])
    saved = json.loads((tmp_path / "e.png.json").read_text())
    assert summary["keys"] == ["lr"] and saved["x"] == "epoch"
    assert saved["series"]["lr"] == {
        "first": [[0.25, 0.1], [0.5, 0.2], [0.75, pytest.approx(0.3)], [1.0, 0.4]],
        "second": [[0.5, 0.2], [1.0, 0.2]],
    }
    with pytest.raises(DataError, match="matches"):
        plot_curves([a], tmp_path / "x.png", keys=["nothing_*"])


def test_viz_curves_command(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    out = tmp_path / "cli.png"
    assert (
        main(["viz", "curves", str(a), str(b / "metrics.jsonl"), "--keys", "loss*", "--out", str(out)]) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["keys"] == ["loss", "loss_dense"] and out.is_file()
    assert main(["viz", "curves", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_a_rising_curve_rises_in_its_panel():
    panel = np.asarray(draw_panel("loss", [([[0, 0.0], [10, 1.0]], PALETTE[0])], 320, 200))
    rows, cols = np.nonzero((panel == PALETTE[0]).all(axis=2))
    left, right = rows[cols == cols.min()].mean(), rows[cols == cols.max()].mean()
    assert cols.max() - cols.min() > 200 and left - right > 100  # image rows grow downwards

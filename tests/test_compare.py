"""densessl compare: its statistics against scipy on fixed numbers, pairing by seed, the gap a
method closes, a comparison that resumes without redoing finished runs, and the command end to end."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from scipy import stats

from densessl import compare
from densessl.cli import main
from densessl.compare import CompareSettings, describe, markdown_tables, paired_test, run_compare, summarise
from tests.helpers import TINY, torch_threads

VALUES = [14.2, 16.9, 13.1, 17.5, 15.0]


def test_describe_matches_scipy():
    d = describe(VALUES)
    low, high = stats.t.interval(0.95, len(VALUES) - 1, loc=stats.tmean(VALUES), scale=stats.sem(VALUES))
    assert d["n"] == 5 and d["mean"] == pytest.approx(15.34)
    assert d["std"] == pytest.approx(stats.tstd(VALUES))
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert describe([3.0]) == {"n": 1, "mean": 3.0, "std": 0.0, "ci_low": 3.0, "ci_high": 3.0}


def test_the_spread_has_the_chi_square_interval_of_a_standard_deviation():
    # printed chi-square quantiles, 4 degrees of freedom: 0.4844 (2.5%) and 11.1433 (97.5%)
    unit = describe([-1.0, -0.5, 0.0, 0.5, 1.0])
    scale = 1 / unit["std"]
    assert unit["std_low"] * scale == pytest.approx(math.sqrt(4 / 11.1433), rel=1e-4)
    assert unit["std_high"] * scale == pytest.approx(math.sqrt(4 / 0.4844), rel=1e-4)
    d = describe(VALUES)
    assert d["std_low"] < d["std"] < d["std_high"]
    # twenty seeds pin a spread down more closely than five
    wide = describe([v * 1.5 for v in [-1.0, -0.5, 0.0, 0.5, 1.0] * 4])
    assert wide["std_high"] / wide["std"] < unit["std_high"] / unit["std"]


def test_paired_test_matches_scipy_and_is_paired():
    other = [v - 0.5 + 0.1 * i for i, v in enumerate(VALUES)]
    result = paired_test(VALUES, other)
    expected = stats.ttest_rel(VALUES, other)
    assert result["t"] == pytest.approx(expected.statistic) and result["p"] == pytest.approx(expected.pvalue)
    assert result["mean_difference"] == pytest.approx(0.3)
    # the seeds' spread dwarfs the difference: unpaired, it would not be significant
    assert result["p"] < 0.05 < stats.ttest_ind(VALUES, other).pvalue
    assert math.isnan(paired_test([1.0, 2.0], [0.0, 1.0])["p"]), "a constant difference has no t"
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1.0], [1.0, 2.0])


def record(method: str, seed: int, **scores: float) -> dict:
    return {"method": method, "seed": seed, "scores": scores}


def test_summary_pairs_common_seeds_and_measures_the_gap_closed():
    results = [
        *(record("random", s, linear=10.0 + s) for s in range(3)),
        *(record("supervised", s, linear=30.0 + s) for s in range(3)),
        *(record("mocov2", s, linear=15.0 + s, knn=50.0) for s in range(3)),
        *(record("densecl", s, linear=20.0 + 2 * s) for s in (1, 2)),  # seed 0 missing
    ]
    summary = summarise(results, ["linear", "knn"])
    cells = summary["methods"]
    assert cells["mocov2"]["linear"]["mean"] == 16.0 and cells["densecl"]["linear"]["n"] == 2
    assert cells["mocov2"]["linear"]["gap_closed"] == pytest.approx((16 - 11) / (31 - 11))
    assert "gap_closed" not in cells["mocov2"]["knn"], "no floor or ceiling on that protocol"
    vit = summarise(
        [*results, *(dict(record("mgc", s, linear=14.0), arch="vit_tiny") for s in range(3))], ["linear"]
    )
    assert "gap_closed" not in vit["methods"]["mgc"]["linear"], "a ViT is not measured against ResNet bounds"
    pair = next(p for p in summary["pairs"] if {p["a"], p["b"]} == {"mocov2", "densecl"})
    assert pair["n"] == 2 and pair["mean_difference"] == pytest.approx(((16 - 22) + (17 - 24)) / 2)
    assert not any(p["protocol"] == "knn" for p in summary["pairs"]), "knn has one method only"
    table = markdown_tables(summary, ["linear", "knn"])
    assert "| mocov2 | 16.00 ± 1.00 [" in table and "(25%)" in table
    assert "| mocov2 | densecl | linear | 2 | -6.50 |" in table
    assert "| mocov2 | linear-probe mIoU | 3 | 1.00 | [0.52, 6.28] |" in table, "the spread's interval"


def test_a_resumed_comparison_reads_finished_runs_back(tmp_path, monkeypatch):
    settings = CompareSettings(
        methods=["mocov2"], seeds=[0, 1], protocols=["knn"], supervised_epochs=0, step_ms={"mocov2": 100.0}
    )
    for name in ("mocov2", "random"):
        for seed in (0, 1):
            path = tmp_path / f"{name}_seed{seed}" / "result.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(record(name, seed, knn=40.0 + seed + (name == "mocov2"))))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr("densessl.training.trainer.Trainer.fit", no_training)
    monkeypatch.setattr(compare, "evaluate_backbone", no_training)
    summary = run_compare(settings, tmp_path)
    assert summary["methods"]["mocov2"]["knn"]["mean"] == 41.5
    assert (tmp_path / "table.md").is_file() and (tmp_path / "compare.png").stat().st_size > 0
    assert json.loads((tmp_path / "plan.json").read_text())["mocov2"]["source"] == "given step time"


def test_equal_compute_is_planned_in_steps_and_whole_epochs_only_when_asked(tmp_path):
    # the quick MoCo-family recipes: 16384 scenes in batches of 128, 128 steps per epoch
    given = {"mocov2": 420.0, "densecl": 500.0, "revisited_moco": 140.625}
    steps = CompareSettings(methods=list(given), minutes=3, step_ms=given)
    (tmp_path / "steps").mkdir()
    (tmp_path / "whole").mkdir()
    plan = compare.plan_epochs(steps, tmp_path / "steps")
    assert {m: plan[m]["steps"] for m in given} == {"mocov2": 428, "densecl": 360, "revisited_moco": 1280}
    assert plan["densecl"]["epochs"] == 2.8125 and plan["densecl"]["seconds_per_epoch"] == 64.0
    whole = CompareSettings(methods=list(given), minutes=3, step_ms=given, whole_epochs=True)
    plan = compare.plan_epochs(whole, tmp_path / "whole")
    assert {m: plan[m]["epochs"] for m in given} == {"mocov2": 3, "densecl": 2, "revisited_moco": 10}
    assert not any("steps" in entry for entry in plan.values())


def test_the_command_end_to_end(tmp_path, capsys):
    overrides = [o for o in TINY if not o.startswith("method.")]
    code = main(
        [
            "compare", "--methods", "mocov2", "--seeds", "0", "--minutes", "0.05",
            "--step-ms", "mocov2=100", "--protocols", "nn", "svm", "--supervised-epochs", "1",
            "--probe-train", "16", "--probe-test", "8", "--out", str(tmp_path), *overrides,
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["methods"]) == {"mocov2", "random", "supervised"}
    for cells in summary["methods"].values():
        assert set(cells) == {"nn", "svm"} and all(0 <= c["mean"] <= 100 for c in cells.values())
    assert json.loads(out.strip().splitlines()[-1])["means"]["mocov2"].keys() == {"nn", "svm"}
    assert (tmp_path / "mocov2_seed0" / "pretrain" / "checkpoints" / "last.pt").is_file()
    assert summary["scenes"]["objects_per_image"]["mean"] >= 2


def test_runs_side_by_side_give_the_runs_one_after_the_other_give(tmp_path, caplog):
    overrides = [o for o in TINY if not o.startswith("method.")]
    args = [
        "compare", "--methods", "mocov2", "--seeds", "0", "1", "--minutes", "0.05",
        "--step-ms", "mocov2=100", "--protocols", "nn", "--supervised-epochs", "0",
        "--probe-train", "16", "--probe-test", "8",
    ]  # fmt: skip
    # the serial runs get the threads of a pool's run, so that both sum alike
    with torch_threads(compare.threads_per_job(2)):
        assert main([*args, "--out", str(tmp_path / "serial"), *overrides]) == 0
    with caplog.at_level("INFO", logger="densessl.compare"):
        assert main([*args, "--jobs", "2", "--out", str(tmp_path / "pool"), *overrides]) == 0
    assert "2 runs at a time" in caplog.text
    serial, pool = (
        json.loads((tmp_path / d / "summary.json").read_text())["runs"] for d in ("serial", "pool")
    )
    assert [(r["method"], r["seed"]) for r in pool] == [(r["method"], r["seed"]) for r in serial]
    for a, b in zip(serial, pool, strict=True):
        if a["method"] == "mocov2":
            assert b["final_loss"] == pytest.approx(a["final_loss"], rel=1e-6)
        assert b["scores"]["nn"] == pytest.approx(a["scores"]["nn"], abs=0.5)
    assert (tmp_path / "pool" / "mocov2_seed1" / "pretrain" / "checkpoints" / "last.pt").is_file()


def test_a_failed_run_of_a_pool_stops_the_comparison_with_its_error(tmp_path):
    settings = CompareSettings(
        methods=["mocov2"], seeds=[0], protocols=["knn"], supervised_epochs=0, step_ms={"mocov2": 100.0},
        overrides=["data.source=folder:/no/such/folder"], jobs=2,
    )  # fmt: skip
    with pytest.raises(Exception, match="no/such/folder"):
        run_compare(settings, tmp_path)


def test_a_variant_is_its_method_with_overrides():
    assert compare.split_variant("mocov2") == ("mocov2", [])
    assert compare.split_variant("mocov2@optim.lr=0.03@data.source=synthetic:medium") == (
        "mocov2",
        ["optim.lr=0.03", "data.source=synthetic:medium"],
    )
    with pytest.raises(ValueError, match="KEY=VALUE"):
        compare.split_variant("mocov2@optim.lr")
    assert compare.run_directory_name("mocov2@data.source=synthetic:medium", 3) == (
        "mocov2@data.source=synthetic-medium_seed3"
    )


def test_a_variant_too_long_for_a_folder_name_keeps_its_start_and_a_hash(tmp_path):
    pipeline = "[{autoaugment: imagenet}, {jitter_p: 1.0, hue: 0.5, grayscale_p: 0.0, blur_p: 0.0}]"
    long = "revisited_moco" + "".join(f"@views.{i}.photometric.choice.0={pipeline}" for i in (0, 2, 3, 4, 5))
    other = long.replace("hue: 0.5", "hue: 0.4")
    folder = compare.run_directory_name(long, 1)
    assert len(folder.encode()) <= 255 and folder.startswith("revisited_moco@views.0.photometric")
    assert folder == compare.run_directory_name(long, 1)  # the same folder on resume
    assert folder != compare.run_directory_name(other, 1)  # only the hash tells them apart
    (tmp_path / folder).mkdir()
    (tmp_path / f"calibrate_{compare._folder_safe(long)}").mkdir()


def test_a_variant_trains_with_its_overrides_and_is_compared_as_a_method(tmp_path):
    overrides = [o for o in TINY if not o.startswith("method.")]
    variant = "mocov2@optim.lr=0.5@method.temperature=0.5"
    code = main(
        [
            "compare", "--methods", "mocov2", variant, "--seeds", "0", "1", "--minutes", "0.02",
            "--step-ms", "mocov2=100", "--protocols", "nn", "--supervised-epochs", "0",
            "--probe-train", "16", "--probe-test", "8", "--out", str(tmp_path), *overrides,
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["methods"]) == ["mocov2", variant, "random"]
    assert summary["plan"][variant]["steps"] == summary["plan"]["mocov2"]["steps"]
    steps = summary["plan"]["mocov2"]["steps"]  # 0.02 minutes of 100 ms steps
    assert steps == 12 and {r["steps"] for r in summary["runs"] if r["method"] != "random"} == {steps}
    base = yaml.safe_load((tmp_path / "mocov2_seed1" / "pretrain" / "config.yaml").read_text())
    changed = yaml.safe_load((tmp_path / f"{variant}_seed1" / "pretrain" / "config.yaml").read_text())
    assert (base["optim"]["lr"], base["method"]["temperature"]) == (0.1, 0.2)
    assert (changed["optim"]["lr"], changed["method"]["temperature"]) == (0.5, 0.5)
    assert changed["train"]["seed"] == base["train"]["seed"] == 1
    assert {(p["a"], p["b"]) for p in summary["pairs"]} >= {("mocov2", variant)}


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (["mocov3"], "no method 'mocov3'"),
        (["mocov2@optim.lr"], "KEY=VALUE"),
        (["mocov2", "mocov2"], "twice"),
    ],
)
def test_a_wrong_method_or_variant_is_one_line(tmp_path, methods, message, capsys):
    assert main(["compare", "--methods", *methods, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for path in Path("/proc").glob(f"{parent}/task/*/children"):
            with contextlib.suppress(OSError):
                for child in map(int, path.read_text().split()):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["sigterm", "sigint", "sigkill"]
)
def test_a_stopped_pool_comparison_saves_the_runs_under_way_and_leaves_no_process(tmp_path, stop):
    # SIGTERM or SIGINT to the comparison alone (a scheduler, ``kill -INT``; a Ctrl-C reaches no
    # other process, the pool's being out of the terminal's group): passed on to the pool, which
    # saves and ends; SIGKILL: the pool's processes learn of their parent's end from the kernel
    # (PR_SET_PDEATHSIG) and save and end all the same
    overrides = [o for o in TINY if not o.startswith("method.")]
    out = tmp_path / "compare"
    command = [
        sys.executable, "-m", "densessl", "compare", "--methods", "mocov2", "--seeds", "0", "1", "2",
        "--minutes", "2", "--step-ms", "mocov2=100", "--protocols", "nn", "--supervised-epochs", "0",
        "--probe-train", "16", "--probe-test", "8", "--jobs", "2", "--out", str(out), *overrides,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = out / "mocov2_seed0" / "pretrain" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    workers = _children(process.pid)
    assert workers, "the pool has not started"
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    if stop != signal.SIGKILL:
        assert process.returncode == 130, err[-3000:]
        assert "the same command continues the comparison" in err
    else:
        assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    checkpoint = out / "mocov2_seed0" / "pretrain" / "checkpoints" / "last.pt"
    assert checkpoint.is_file()  # the run under way saved where it was
    assert not (out / "mocov2_seed0" / "result.json").exists(), "the run under way stopped, unfinished"
    assert not (out / "mocov2_seed2").exists()  # queued, never started


def test_init_seed_gives_every_seed_the_same_initial_weights(tmp_path):
    overrides = [o for o in TINY if not o.startswith("method.")]
    args = [
        "compare", "--methods", "mocov2", "--seeds", "0", "1", "--minutes", "0.02", "--step-ms", "mocov2=100",
        "--protocols", "nn", "--supervised-epochs", "0", "--probe-train", "16", "--probe-test", "8",
    ]  # fmt: skip
    assert main([*args, "--init-seed", "7", "--out", str(tmp_path / "held"), *overrides]) == 0
    assert main([*args, "--out", str(tmp_path / "drawn"), *overrides]) == 0

    def seeds_of(run: str) -> tuple[int | None, int]:
        path = tmp_path / run / "pretrain" / "checkpoints" / "last.pt"
        config = torch.load(path, map_location="cpu", weights_only=False)["config"]
        return config["train"].get("init_seed"), config["train"]["seed"]

    assert seeds_of("held/mocov2_seed0") == (7, 0)
    assert seeds_of("held/mocov2_seed1") == (7, 1)
    assert seeds_of("drawn/mocov2_seed1") == (None, 1)
    for run in ("held", "drawn"):
        records = json.loads((tmp_path / run / "summary.json").read_text())["runs"]
        assert {r["init_seed"] for r in records} == ({7} if run == "held" else {None})
        assert {r["method"] for r in records} == {"mocov2", "random"}

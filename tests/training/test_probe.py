"""The online dense probe: the offline commands' figures, an untouched training, a logged and
bounded cost, a bad probe set that ends nothing, and a history without repeats after resume."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from densessl.cli import main
from densessl.config import ProbeConfig, load_config
from densessl.errors import ConfigError
from densessl.training.probe import OnlineProbe, ProbeSet, load_probe_set
from densessl.training.trainer import Trainer
from tests.helpers import QUICK, TINY, TinyBackbone, free_port

#: a probe at the end of each of the two epochs (steps 6 and 12), on 24 scenes a split, unbounded
PROBE = [
    "train.probe.every_epochs=1",
    "train.probe.images=24",
    "train.probe.linear_epochs=3",
    "train.probe.max_time_share=0",
]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir) if "loss" in r}


def probes(run_dir: Path) -> list[dict]:
    return [r for r in records(run_dir) if "probe_seconds" in r]


def train(run_dir: Path, *overrides: str, resume: str | None = None) -> dict:
    return Trainer(load_config(QUICK, [*TINY, *overrides]), run_dir, resume=resume).fit()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
    """The losses of the two epochs without a probe."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(run_dir)
    return losses(run_dir)


def offline(capsys, command: str, weights: Path, *options: str) -> dict:
    argv = ["eval", command, "--weights", str(weights), "--data", "synthetic", "--device", "cpu"]
    assert main([*argv, "--synthetic-train", "24", "--synthetic-val", "24", *options]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_online_figures_equal_the_offline_commands_on_that_epochs_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(run_dir, *PROBE, "train.checkpoint_every=1")
    first = probes(run_dir)[0]
    assert first["step"] == 6 and first["epoch"] == 1.0 and first["probe_images"] == 24
    weights = run_dir / "checkpoints" / "epoch_0001.pt"
    assert first["probe_nn_miou"] == offline(capsys, "seg-nn", weights)["miou"]
    linear = offline(capsys, "seg-probe", weights, "--epochs", "3", "--seeds", "0")
    assert first["probe_linear_miou"] == linear["miou"]


def test_the_training_losses_are_bit_identical_with_and_without_the_probe(tmp_path, reference):
    run_dir = tmp_path / "run"
    train(run_dir, *PROBE)
    assert [r["step"] for r in probes(run_dir)] == [6, 12]
    assert losses(run_dir) == reference


def test_the_probe_puts_every_random_generator_back():
    config = ProbeConfig(every_epochs=1, images=8, image_size=16, linear_epochs=1, max_time_share=0)
    probe, encoder = OnlineProbe(config, load_probe_set(config), "cpu"), TinyBackbone()
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    record = probe(encoder, step=1, epoch=1.0)
    assert record is not None and "probe_linear_miou" in record
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]


def test_the_time_share_is_logged_with_the_figures(tmp_path):
    run_dir = tmp_path / "run"
    started = time.perf_counter()
    train(run_dir, *PROBE)
    wall = time.perf_counter() - started
    found = probes(run_dir)
    assert len(found) == 2
    for record in found:
        assert record["probe_seconds"] > 0 and record["probe_time_share"] > 0
        assert 0 <= record["probe_nn_miou"] <= 100 and 0 <= record["probe_linear_miou"] <= 100
    # the share is of all probes so far over the training time so far, which is less than the wall time
    assert found[1]["probe_time_share"] > sum(r["probe_seconds"] for r in found) / wall


def test_a_probe_that_would_overrun_its_share_runs_on_fewer_images_or_is_skipped(caplog):
    config = ProbeConfig(every_epochs=1, images=24, image_size=16, linear_epochs=0, max_time_share=0.05)
    probe = OnlineProbe(config, load_probe_set(config), "cpu")
    encoder = TinyBackbone()

    def probe_after(training_seconds: float) -> dict | None:
        # as if the last probe had scored 24 images in 0.24 s
        probe.clock, probe.seconds, probe.cost = time.perf_counter() - training_seconds, 0.0, (24, 0.24)
        return probe(encoder, step=1, epoch=1.0)

    with caplog.at_level(logging.INFO, logger="densessl"):
        assert probe_after(100.0)["probe_images"] == 24  # 5 s allowed
        assert probe_after(4.0)["probe_images"] < 24  # 0.2 s allowed: fewer images
        assert "on " in caplog.text and "of 24 images per split" in caplog.text
        assert probe_after(0.5) is None  # 0.025 s allowed: not even 8 images
        assert "probe skipped at epoch 1" in caplog.text


def test_a_probe_is_expected_to_cost_up_to_the_square_of_its_images():
    config = ProbeConfig(every_epochs=1, images=300, max_time_share=0.05)
    probe = OnlineProbe(config, ProbeSet([], [], 2, 16, "zero"), "cpu")
    probe.cost = (50, 1.0)
    # 4 s: twice the images (4x the retrieval's pairs), not four times; 0.5 s: half of them
    assert probe._affordable(4.0) == 100
    assert probe._affordable(0.5) == 25


def test_a_bad_probe_set_is_a_warning_and_the_run_finishes(tmp_path, caplog, reference):
    missing = tmp_path / "no-such-folder"
    with caplog.at_level(logging.WARNING, logger="densessl"):
        summary = train(tmp_path / "run", *PROBE, f"train.probe.data=voc:{missing}")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(missing) in warnings[0] and "without the probe" in warnings[0]
    assert summary["step"] == 12 and not probes(tmp_path / "run")
    assert losses(tmp_path / "run") == reference


def test_a_probe_that_raises_loses_that_epochs_figures_only(tmp_path, caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("densessl.eval.retrieval.evaluate_nn", broken)
    with caplog.at_level(logging.WARNING, logger="densessl"):
        summary = train(tmp_path / "run", *PROBE)
    failures = [r.getMessage() for r in caplog.records if "probe at epoch" in r.getMessage()]
    assert len(failures) == 2 and "out of memory" in failures[0] and "training continues" in failures[0]
    assert summary["step"] == 12 and not probes(tmp_path / "run")


def test_a_resumed_run_logs_each_probe_once_and_the_same_losses(tmp_path, reference):
    run_dir = tmp_path / "run"
    train(run_dir, *PROBE, "train.max_steps=4")
    shutil.copy(run_dir / "checkpoints" / "last.pt", tmp_path / "step4.pt")
    # the run goes on past its epoch's probe, then restarts from step 4: the probe of step 6 that
    # the history already holds is dropped with the steps after 4 and run again
    train(run_dir, *PROBE, "train.max_steps=8", resume="auto")
    assert [r["step"] for r in probes(run_dir)] == [6]
    train(run_dir, *PROBE, resume=str(tmp_path / "step4.pt"))
    found = probes(run_dir)
    assert [(r["step"], r["epoch"]) for r in found] == [(6, 1.0), (12, 2.0)]
    assert [r["step"] for r in records(run_dir) if "loss" in r] == list(range(1, 13))
    assert losses(run_dir) == reference


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.probe.data=vco:/data", "did you mean 'voc'"),
        ("train.probe.data=voc", "voc needs the data set's folder"),
        ("train.probe.data=synthetic:eassy", "did you mean 'easy'"),
        ("train.probe.every_epochs=-1", "train.probe.every_epochs must be an integer >= 0"),
        ("train.probe.max_time_share=1.5", "train.probe.max_time_share must be a number in [0, 1]"),
        ("train.probe.every_epoch=1", "did you mean 'every_epochs'"),
    ],
)
def test_probe_settings_are_checked_at_start_up(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as info:
        load_config(QUICK, [override])
    assert "\n" not in str(info.value)


def test_a_resume_may_turn_the_probe_on(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, "train.max_steps=6")
    train(run_dir, *PROBE, resume="auto")
    assert [r["step"] for r in probes(run_dir)] == [12]


@pytest.mark.slow
def test_under_torchrun_only_the_main_process_probes_and_no_process_waits_forever(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(free_port()), "-m", "densessl", "pretrain", str(QUICK), *TINY, *PROBE]
    # a process left waiting for a peer that never comes fails after 30 s instead of hanging
    cmd += ["train.collective_timeout_s=30", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in probes(tmp_path / "ddp")] == [6, 12]
    assert sorted(losses(tmp_path / "ddp")) == list(range(1, 13))

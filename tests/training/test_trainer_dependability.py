"""Interruptions, run history, run-directory rules, resume checks and write failures of the trainer."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import densessl.training.checkpoint as checkpoint_module
import densessl.training.trainer as trainer_module
from densessl.config import load_config
from densessl.data.base import DataError
from densessl.training.checkpoint import CheckpointError, load_checkpoint
from densessl.training.trainer import Trainer, TrainingError, worker_error_message
from tests.helpers import QUICK, TINY


def config(*extra: str):
    return load_config(QUICK, [*TINY, *extra])


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    records = history(run_dir)
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[int, float]:
    run = tmp_path_factory.mktemp("full")
    Trainer(config("train.max_steps=9"), run).fit()
    return losses(run)


def signal_on_call(monkeypatch, name: str, call: int, signum: int = signal.SIGTERM, times: int = 1):
    """Make ``trainer_module.<name>`` send ``signum`` to this process on its ``call``-th call."""
    original = getattr(trainer_module, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, name, wrapped)


# prepare_views: start of a step; clip_gradients: after backward, before the optimiser step (the
# teacher update and queue push are done); collate_views: while the next batch is being fetched
@pytest.mark.parametrize(
    "where,signum",
    [
        ("prepare_views", signal.SIGTERM),
        ("clip_gradients", signal.SIGTERM),
        ("clip_gradients", signal.SIGINT),
        ("collate_views", signal.SIGTERM),
    ],
)
def test_a_signal_anywhere_in_a_step_finishes_it_saves_it_and_resume_is_exact(
    tmp_path, monkeypatch, uninterrupted, where, signum
):
    signal_on_call(monkeypatch, where, call=4, signum=signum)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config("train.max_steps=9"), tmp_path).fit()
    saved = load_checkpoint(tmp_path / "checkpoints/last.pt")
    # a signal inside the 4th step lets it finish (saved as step 4); one while its batch is being
    # fetched stops before it starts (saved as step 3)
    done = 3 if where == "collate_views" else 4
    assert saved["step"] == done
    assert sorted(losses(tmp_path)) == list(range(1, done + 1))
    monkeypatch.undo()
    Trainer(config("train.max_steps=9"), tmp_path, resume="auto").fit()
    continued = losses(tmp_path)
    assert sorted(continued) == list(range(1, 10))
    for step in range(1, 10):
        assert continued[step] == pytest.approx(uninterrupted[step], abs=1e-6), step


def test_repeated_signals_and_a_signal_during_the_final_save(tmp_path, monkeypatch, capfd, uninterrupted):
    signal_on_call(monkeypatch, "clip_gradients", call=2, times=3)
    original_save = checkpoint_module.torch.save

    def save_under_fire(obj, path):
        os.kill(os.getpid(), signal.SIGTERM)
        original_save(obj, path)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_under_fire)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config("train.max_steps=9"), tmp_path).fit()
    err = capfd.readouterr().err
    assert "finishing the current step" in err and "already stopping" in err
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 2
    Trainer(config("train.max_steps=9"), tmp_path, resume="auto").fit()
    assert losses(tmp_path) == pytest.approx(uninterrupted, abs=1e-6)


def test_history_keeps_each_step_once_after_crashes_past_the_last_checkpoint(tmp_path, monkeypatch):
    def crash_at(step: int):
        original = trainer_module.prepare_views
        calls = {"n": 0}

        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == step:
                raise RuntimeError("simulated crash")
            return original(*args, **kwargs)

        monkeypatch.setattr(trainer_module, "prepare_views", wrapped)

    every = "train.checkpoint_every_steps=3"
    crash_at(6)  # logs steps 1-5, checkpoint at 3
    with pytest.raises(RuntimeError, match="simulated"):
        Trainer(config("train.max_steps=9", every, "train.tensorboard=true"), tmp_path).fit()
    assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5]
    crash_at(4)  # resumes at 3, logs 4-6, checkpoint at 6, crashes in step 7
    with pytest.raises(RuntimeError, match="simulated"):
        Trainer(config("train.max_steps=9", every, "train.tensorboard=true"), tmp_path, resume="auto").fit()
    monkeypatch.undo()
    Trainer(config("train.max_steps=9", every, "train.tensorboard=true"), tmp_path, resume="auto").fit()
    assert sorted(losses(tmp_path)) == list(range(1, 10))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, 10))
    log_text = (tmp_path / "run.log").read_text()
    assert log_text.count("resuming from") == 2 and "new run" in log_text


def test_an_existing_run_is_refused_without_resume_or_overwrite(tmp_path):
    Trainer(config("train.max_steps=2"), tmp_path).fit()
    with pytest.raises(TrainingError, match="already holds a run.*--resume auto.*--overwrite"):
        Trainer(config("train.max_steps=2"), tmp_path).fit()
    (tmp_path / "eval.jsonl").write_text('{"miou": 1}\n')
    result = Trainer(config("train.max_steps=1"), tmp_path, overwrite=True).fit()
    assert result["step"] == 1 and sorted(losses(tmp_path)) == [1]
    assert not (tmp_path / "eval.jsonl").exists()


def test_resume_auto_needs_a_checkpoint_and_auto_or_new_starts_one(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint in"):
        Trainer(config("train.max_steps=1"), tmp_path / "empty", resume="auto").fit()
    result = Trainer(config("train.max_steps=1"), tmp_path / "new", resume="auto-or-new").fit()
    assert result["step"] == 1
    result = Trainer(config("train.max_steps=2"), tmp_path / "new", resume="auto-or-new").fit()
    assert result["step"] == 2 and sorted(losses(tmp_path / "new")) == [1, 2]


def test_temporary_files_of_interrupted_saves_are_removed(tmp_path):
    Trainer(config("train.max_steps=1"), tmp_path).fit()
    stale = tmp_path / "checkpoints" / ".last.pt.tmp-99999"
    stale.write_bytes(b"half a checkpoint")
    Trainer(config("train.max_steps=2"), tmp_path, resume="auto").fit()
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]


@pytest.mark.parametrize(
    "change,named",
    [
        ("train.batch_size=16", "train.batch_size (checkpoint 8, now 16)"),
        ("model.width=0.25", "model.width (checkpoint 0.125, now 0.25)"),
        ("model.arch=resnet34", "model.arch (checkpoint resnet18, now resnet34)"),
    ],
)
def test_resume_refuses_an_incompatible_config_in_one_line(tmp_path, change, named):
    Trainer(config("train.max_steps=1"), tmp_path).fit()
    with pytest.raises(TrainingError) as info:
        Trainer(config("train.max_steps=2", change), tmp_path, resume="auto").fit()
    message = str(info.value)
    assert named in message and "\n" not in message


def test_resume_accepts_bookkeeping_changes(tmp_path):
    Trainer(config("train.max_steps=1"), tmp_path).fit()
    result = Trainer(config("train.max_steps=2", "train.log_every=2"), tmp_path, resume="auto").fit()
    assert result["step"] == 2


def zero_inside_the_largest_tensor(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        f.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 3)
        f.write(b"\x00" * 64)


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog):
    # 6 steps per epoch: epoch_0001.pt at step 6, last.pt at step 8
    Trainer(config("train.max_steps=8", "train.checkpoint_every=1"), tmp_path).fit()
    last = tmp_path / "checkpoints/last.pt"
    assert load_checkpoint(last)["step"] == 8
    zero_inside_the_largest_tensor(last)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(last)
    with caplog.at_level(logging.WARNING):
        result = Trainer(
            config("train.max_steps=9", "train.checkpoint_every=1"), tmp_path, resume="auto"
        ).fit()
    assert result["step"] == 9
    assert any("epoch_0001.pt" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert sorted(losses(tmp_path)) == list(range(1, 10))


def test_every_checkpoint_damaged_is_one_clear_error(tmp_path):
    Trainer(config("train.max_steps=2"), tmp_path).fit()
    (tmp_path / "checkpoints/last.pt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="no intact checkpoint.*last.pt"):
        Trainer(config("train.max_steps=3"), tmp_path, resume="auto").fit()


def test_disk_full_while_saving_is_one_line_and_leaves_nothing_partial(tmp_path, monkeypatch):
    def full_disk(obj, path):
        Path(path).write_bytes(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(CheckpointError) as info:
        Trainer(config("train.max_steps=2"), tmp_path).fit()
    assert "no space left" in str(info.value) and "\n" not in str(info.value)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_an_unwritable_run_directory_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="cannot write into the run directory"):
        Trainer(config("train.max_steps=1"), blocker / "run").fit()


def test_a_worker_error_loses_its_traceback_and_keeps_the_work(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(10):
        Image.new("RGB", (40, 48), (i * 20, 0, 0)).save(images / f"{i:02d}.png")
    (images / "07.png").write_bytes(b"broken")
    run = tmp_path / "run"
    cfg = config(
        f"data.source=folder:{images}", "data.corrupt=error", "data.workers=1", "train.batch_size=2",
        "method.queue_size=4", "train.epochs=1",
    )  # fmt: skip
    with pytest.raises(Exception) as info:
        Trainer(cfg, run).fit()
    message = str(info.value)
    assert "07.png" in message and "Traceback" not in message and "\n" not in message
    saved = load_checkpoint(run / "checkpoints/last.pt")
    assert saved["step"] == max(losses(run))


def test_worker_error_message_keeps_the_last_line():
    class Wrapped(RuntimeError):
        pass

    text = "Caught Wrapped in DataLoader worker process 0.\nOriginal Traceback:\n  ...\nWrapped: the reason"
    assert worker_error_message(Wrapped(text)) == "the reason"
    assert worker_error_message(Wrapped("plain")) == "plain"


def test_checkpoints_carry_a_checksum_of_their_contents(tmp_path):
    Trainer(config("train.max_steps=1"), tmp_path).fit()
    ckpt = torch.load(tmp_path / "checkpoints/last.pt", weights_only=False)
    assert ckpt["checksum"] == checkpoint_module.state_digest(ckpt)
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][key] = ckpt["model"][key] + 1e-3
    assert ckpt["checksum"] != checkpoint_module.state_digest(ckpt)


def image_folder(root: Path, good: int, broken: int) -> Path:
    from PIL import Image

    root.mkdir()
    for i in range(good):
        Image.new("RGB", (40, 48), (i * 20 % 255, 0, 0)).save(root / f"{i:02d}.png")
    (root / "bad").mkdir()
    for i in range(broken):
        (root / "bad" / f"{i:02d}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_the_skip_budget_counts_distinct_unreadable_files_of_the_run(tmp_path, workers):
    images = image_folder(tmp_path / "images", good=16, broken=4)
    tiny = ["train.batch_size=4", "method.queue_size=8", "train.epochs=2", f"data.workers={workers}"]
    result = Trainer(
        config(f"data.source=folder:{images}", *tiny, "data.max_skipped_fraction=0.25"), tmp_path / "ok"
    ).fit()
    assert result["last_metrics"]["unreadable_images"] == 4
    with pytest.raises(DataError, match="unreadable images among 20.*skip budget of 2") as info:
        Trainer(
            config(f"data.source=folder:{images}", *tiny, "data.max_skipped_fraction=0.1"), tmp_path / "no"
        ).fit()
    assert "\n" not in str(info.value)


def test_epoch_copies_leave_out_the_buffers_the_method_names_and_last_keeps_them(
    tmp_path, monkeypatch, caplog
):
    from densessl.methods.densecl import DenseCL

    monkeypatch.setattr(DenseCL, "light_state_exclude", ("dense_queue.",))
    Trainer(config("train.max_steps=8", "train.checkpoint_every=1"), tmp_path).fit()
    epoch = load_checkpoint(tmp_path / "checkpoints/epoch_0001.pt")
    last = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert {"dense_queue.keys", "dense_queue.ptr"} <= set(last["model"])
    assert not any(k.startswith("dense_queue.") for k in epoch["model"])
    assert "queue.keys" in epoch["model"] and epoch["step"] == 6
    # a resume from the epoch copy works, keeps the buffer it had and says it is not exact
    (tmp_path / "checkpoints/last.pt").unlink()
    with caplog.at_level(logging.WARNING):
        result = Trainer(
            config("train.max_steps=8", "train.checkpoint_every=1"), tmp_path, resume="auto"
        ).fit()
    assert result["step"] == 8
    assert any("dense_queue.keys" in r.getMessage() and "not" in r.getMessage() for r in caplog.records)


def _pretrain_until_logged(run: Path, overrides: list[str], **popen: Any) -> subprocess.Popen:
    """A ``densessl pretrain`` process of 200 tiny epochs, returned once it has logged two steps."""
    command = [sys.executable, "-m", "densessl", "pretrain", str(QUICK), *overrides, "train.epochs=200"]
    process = subprocess.Popen(
        [*command, "--out", str(run)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    deadline = time.monotonic() + 120
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    return process


def _last_logged_step(run: Path) -> int:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]


def test_a_burst_of_signals_still_ends_as_a_clean_stop(tmp_path):
    # SIGTERM every 20 ms: the first stops the run, the others arrive while it saves, winds down
    # and exits; none may turn the exit status into a kill
    run = tmp_path / "run"
    process = _pretrain_until_logged(run, TINY)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        time.sleep(0.02)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    # the repeats may all land after the save, where they are ignored without a word
    assert "finishing the current step" in err and "continue with" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == _last_logged_step(run)


def test_a_sigterm_to_the_whole_process_group_with_loader_workers_is_a_clean_stop(tmp_path):
    # a scheduler such as Slurm signals every process of the job: the loader workers too
    run = tmp_path / "run"
    overrides = [*(o for o in TINY if o != "data.workers=0"), "data.workers=1"]
    process = _pretrain_until_logged(run, overrides, start_new_session=True)  # a job's own group
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "stopped at step" in err and "killed by signal" not in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == _last_logged_step(run)

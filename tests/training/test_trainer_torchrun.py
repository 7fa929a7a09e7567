"""Two gloo processes under torchrun: pre-emption of the launcher, and a process that hangs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from densessl.training.checkpoint import load_checkpoint
from tests.helpers import QUICK, TINY, free_port

pytestmark = pytest.mark.slow


def torchrun(out: Path, *extra: str, resume: bool = False, stderr=None) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(free_port()), "-m", "densessl", "pretrain", str(QUICK), *TINY,
        "data.synthetic_length=800", *extra, "--out", str(out), *(["--resume", "auto"] if resume else []),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=stderr or subprocess.PIPE, text=True)


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            steps.append(json.loads(line)["step"])
    return steps


def wait_for_steps(run: Path, count: int, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.time() + limit
    while len(logged_steps(run)) < count:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "training did not start"
        time.sleep(0.2)


def test_sigterm_to_torchrun_saves_the_last_finished_step_and_resumes_without_repeats(tmp_path):
    run = tmp_path / "ddp"
    proc = torchrun(run)
    wait_for_steps(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    saved = load_checkpoint(run / "checkpoints/last.pt")["step"]
    steps = logged_steps(run)
    assert saved >= 3 and steps == list(range(1, saved + 1)), err[-3000:]
    proc = torchrun(run, f"train.max_steps={saved + 2}", resume=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert logged_steps(run) == list(range(1, saved + 3))


def test_a_stopped_process_ends_the_job_with_a_message(tmp_path):
    run = tmp_path / "ddp"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err_file:
        proc = torchrun(run, "train.collective_timeout_s=3", stderr=err_file)
        stopped = []
        try:
            wait_for_steps(run, 2, proc)
            workers = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
            ).stdout.split()
            for pid in workers:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if b"RANK=1" in environ:
                    os.kill(int(pid), signal.SIGSTOP)
                    stopped.append(int(pid))
            assert stopped, workers
            deadline = time.time() + 90
            while "stopped answering" not in log.read_text() and time.time() < deadline:
                time.sleep(0.5)
        finally:
            for pid in stopped:
                for signum in (signal.SIGKILL, signal.SIGCONT):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
            proc.wait(timeout=120)
    text = log.read_text()
    assert "another process stopped answering" in text and "train.collective_timeout_s" in text, text[-3000:]
    assert proc.returncode != 0

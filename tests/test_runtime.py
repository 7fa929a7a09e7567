"""CPU thread defaults: the choice, when a count set from outside is left alone, and the trainer
applying it."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from densessl import runtime
from densessl.config import load_config
from densessl.runtime import choose_cpu_threads, configure_cpu_threads, threads_chosen_by_user
from densessl.training.trainer import Trainer
from tests.helpers import QUICK, TINY


@pytest.mark.parametrize(
    ("cores", "workers", "expected"),
    [
        (2, 1, 1),  # the quick recipe on 2 cores: the case that ran 55x slower with 2 threads
        (2, 0, 1),  # half the cores: 2 threads with no worker ran 10x slower beside other jobs
        (2, 2, 1),
        (1, 4, 1),  # never below one thread
        (1, 0, 1),
        (8, 2, 4),  # half the cores
        (8, 6, 2),  # the cores the workers leave
        (64, 8, 16),  # capped: a big host is not asked for 32 threads
        (16, -3, 8),
    ],
)
def test_threads_are_the_cores_the_workers_leave_at_most_half(cores, workers, expected):
    assert choose_cpu_threads(cores, workers) == expected


def test_a_count_from_outside_is_respected():
    assert threads_chosen_by_user({"OMP_NUM_THREADS": "3"})
    assert threads_chosen_by_user({"MKL_NUM_THREADS": "2"})
    assert threads_chosen_by_user({"WORLD_SIZE": "4"})  # torchrun with several processes
    assert not threads_chosen_by_user({"WORLD_SIZE": "1", "OMP_NUM_THREADS": ""})
    assert not threads_chosen_by_user({})


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_configure_sets_and_logs_the_choice(monkeypatch, caplog, restore_threads):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "available_cores", lambda: 5)
    torch.set_num_threads(1)
    with caplog.at_level("INFO", logger="densessl.runtime"):
        assert configure_cpu_threads(workers=1) == 2
    assert torch.get_num_threads() == 2
    assert "using 2 CPU threads: 5 cores available, 1 data worker" in caplog.text


def test_configure_leaves_an_explicit_count_alone(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    assert configure_cpu_threads(workers=0) == 1
    assert torch.get_num_threads() == 1


def test_available_cores_follows_the_affinity():
    import os

    assert runtime.available_cores() == len(os.sched_getaffinity(0))


def _threads_here(index: int) -> int:
    return torch.get_num_threads()


def test_loader_workers_run_one_thread_whatever_the_main_process_runs(restore_threads):
    # the rule counts each worker as one core: PyTorch gives every DataLoader worker one thread
    torch.set_num_threads(2)
    loader = DataLoader(range(2), batch_size=None, num_workers=1, collate_fn=_threads_here)
    assert list(loader) == [1, 1]


def test_train_cpu_threads_is_used_unless_the_environment_sets_a_count(monkeypatch, restore_threads):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    torch.set_num_threads(1)
    assert configure_cpu_threads(workers=2, requested=3) == 3
    assert torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert configure_cpu_threads(workers=2, requested=3) == 1
    assert torch.get_num_threads() == 1


def test_the_trainer_applies_the_thread_count(monkeypatch, tmp_path, restore_threads):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    # from 2 down to 1: a step on 2 threads can crawl on a busy 2-core machine
    torch.set_num_threads(2)
    config = load_config(QUICK, [*TINY, "train.max_steps=1", "train.cpu_threads=1"])
    Trainer(config, tmp_path / "run").fit()
    assert torch.get_num_threads() == 1

"""CPU thread defaults: the choice, and when a count set from outside is left alone."""

from __future__ import annotations

import pytest
import torch

from densessl import runtime
from densessl.runtime import choose_cpu_threads, configure_cpu_threads, threads_chosen_by_user


@pytest.mark.parametrize(
    ("cores", "workers", "expected"),
    [
        (2, 1, 1),  # the quick recipe on 2 cores: the case that ran 55x slower with 2 threads
        (2, 0, 2),
        (1, 4, 1),  # never below one thread
        (8, 2, 6),
        (64, 8, 16),  # capped: a big host is not asked for 56 threads
        (16, -3, 16),
    ],
)
def test_threads_are_the_cores_the_workers_leave(cores, workers, expected):
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
    monkeypatch.setattr(runtime, "available_cores", lambda: 3)
    with caplog.at_level("INFO", logger="densessl.runtime"):
        assert configure_cpu_threads(workers=1) == 2
    assert torch.get_num_threads() == 2
    assert "using 2 CPU threads: 3 cores available, 1 data worker" in caplog.text


def test_configure_leaves_an_explicit_count_alone(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    assert configure_cpu_threads(workers=0) == 1
    assert torch.get_num_threads() == 1


def test_available_cores_follows_the_affinity():
    import os

    assert runtime.available_cores() == len(os.sched_getaffinity(0))

"""The collapse monitor on real methods: the exported encoder's first output of a step, the
method's queues by name, nothing before a forward."""

from __future__ import annotations

import torch

from densessl.config import load_config
from densessl.eval.collapse import channel_std, dense_rows, effective_rank, mean_cosine
from densessl.training.monitor import CollapseMonitor
from densessl.training.trainer import build_model
from tests.helpers import QUICK, TINY, step0


def test_indicators_come_from_the_exported_encoders_first_output_and_every_queue():
    method = build_model(load_config(QUICK, TINY))  # DenseCL: a global and a dense queue
    monitor = CollapseMonitor(method)
    assert monitor.indicators() == {
        "collapse_queue_similarity_queue": mean_cosine(method.queue.keys),
        "collapse_queue_similarity_dense_queue": mean_cosine(method.dense_queue.keys),
    }
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    encoder = method.export_encoder()
    monitor.start_step()
    with torch.no_grad():
        expected = encoder(first)
        encoder(second)  # a later forward of the same step is not the one kept
    got = monitor.indicators()
    assert got["collapse_channel_std"] == channel_std(expected.mean(dim=(2, 3)))
    assert got["collapse_dense_rank"] == effective_rank(dense_rows(expected))
    monitor.start_step()
    with torch.no_grad():
        encoder(second)
    assert monitor.indicators()["collapse_dense_rank"] != got["collapse_dense_rank"]
    monitor.close()
    monitor.start_step()
    with torch.no_grad():
        encoder(first)
    assert "collapse_dense_rank" not in monitor.indicators(), "a closed monitor no longer watches"


def test_a_method_step_feeds_the_monitor(tmp_path):
    from tests.helpers import random_views

    method = build_model(load_config(QUICK, TINY))
    monitor = CollapseMonitor(method)
    monitor.start_step()
    method(random_views(4, size=32), step0())
    indicators = monitor.indicators()
    assert set(indicators) == {
        "collapse_channel_std",
        "collapse_dense_rank",
        "collapse_queue_similarity_queue",
        "collapse_queue_similarity_dense_queue",
    }
    assert 0 < indicators["collapse_channel_std"] < 1 and indicators["collapse_dense_rank"] >= 1

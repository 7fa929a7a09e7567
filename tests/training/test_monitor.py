"""The collapse monitor on real methods: the exported encoder's first output of a step, the
method's queues by name, nothing before a forward."""

from __future__ import annotations

import json

import pytest
import torch

from densessl.config import load_config
from densessl.demo import quick_config_path
from densessl.eval.collapse import channel_std, dense_rows, effective_rank, mean_cosine
from densessl.training.monitor import CollapseMonitor
from densessl.training.trainer import Trainer, build_model
from tests.helpers import METHOD_TINY, QUICK, QUICK_TINY, TINY, step0


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


@pytest.mark.parametrize("method", sorted(METHOD_TINY))
def test_every_quick_recipe_logs_every_collapse_indicator(tmp_path, method):
    """Whichever way a method runs its exported encoder (the revisited MoCo through the pooled
    forward, MGC through its ViT's tokens), the indicators of its feature map reach metrics.jsonl."""
    overrides = [*QUICK_TINY, *METHOD_TINY[method], "train.max_steps=2", "train.log_every=1"]
    Trainer(load_config(quick_config_path(method), overrides), tmp_path / "run").fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert 0 < record["collapse_channel_std"] < 1, record
        assert record["collapse_dense_rank"] >= 1, record
        queues = [key for key in record if key.startswith("collapse_queue_similarity")]
        assert bool(queues) == (method in ("mocov2", "densecl", "revisited_moco")), queues

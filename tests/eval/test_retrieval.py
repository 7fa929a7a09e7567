"""seg-nn: soft patch labels, nearest-neighbour retrieval and its chunked search."""

from __future__ import annotations

import pytest
import torch

from densessl.eval.retrieval import build_memory, evaluate_nn, nn_label_maps, patch_soft_labels
from tests.helpers import stripe_features


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny; on a loaded 2-core machine a second intra-op thread only adds
    # spin-waiting (an FCN probe step went from ~4 ms to ~50 ms).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_soft_labels_hand_computed() -> None:
    masks = torch.tensor([[[1, 255], [1, 2]]], dtype=torch.uint8)
    zero = patch_soft_labels(masks, 3, (1, 1))
    skip = patch_soft_labels(masks, 3, (1, 1), void="skip")
    assert zero[0, 0, 0].tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert skip[0, 0, 0].tolist() == pytest.approx([0.0, 2 / 3, 1 / 3])
    void = torch.full((1, 2, 2), 255, dtype=torch.uint8)
    assert patch_soft_labels(void, 3, (1, 1), void="skip").sum() == 0


def test_nn_retrieval_one_hot_features_score_100() -> None:
    k = 4
    train_f, train_m = stripe_features(30, k, 0)
    val_f, val_m = stripe_features(10, k, 1)
    r = evaluate_nn(train_f, train_m, val_f * 5.0, val_m, k)
    assert r["miou"] == 1.0 and r["pixel_acc"] == 1.0
    assert r["memory_size"] == 30 * 64 and r["k"] == 30 and r["temperature"] == 0.02
    assert isinstance(r["seconds"], float)
    small = evaluate_nn(train_f, train_m, val_f, val_m, k, patches_per_image=5, k=3)
    assert small["memory_size"] == 150 and small["miou"] == 1.0


def test_nn_chunked_search_is_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    _, masks = stripe_features(10, 3, 0, grid=4)
    keys, values = build_memory(torch.randn(10, 6, 4, 4, generator=gen), masks, 3)
    queries = torch.randn(3, 6, 4, 4, generator=gen)
    whole = nn_label_maps(queries, keys, values, k=7)
    chunked = nn_label_maps(queries, keys, values, k=7, memory_chunk=9)
    torch.testing.assert_close(whole, chunked)
    assert whole.shape == (3, 3, 4, 4)
    torch.testing.assert_close(whole.sum(dim=1), torch.ones(3, 4, 4))

"""seg-cluster: planted clusters, forced Hungarian matching with extra clusters, segment retrieval."""

from __future__ import annotations

import pytest
import torch

from densessl.eval.clustering import evaluate_clusters, run_clustering, segment_retrieval
from densessl.eval.metrics import (
    UNMATCHED,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny; on a loaded 2-core machine a second intra-op thread only adds
    # spin-waiting (an FCN probe step went from ~4 ms to ~50 ms).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _planted(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block masks and features drawn tightly around one random centre per class."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (n, 8, 8), generator=gen)
    masks = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2).to(torch.uint8)
    centres = torch.randn(k, 12, generator=torch.Generator().manual_seed(99)) * 5
    feats = centres[coarse].permute(0, 3, 1, 2) + 0.05 * torch.randn(n, 12, 8, 8, generator=gen)
    return feats.contiguous(), masks


def test_planted_clusters_score_100() -> None:
    feats, masks = _planted(16, 4, 0)
    masks[:, :2] = 255
    r = run_clustering(feats, masks, 4, seeds=(0, 1), n_init=1, pca_dim=5)
    (hung, many) = r["clusterings"]
    assert (hung["k"], hung["matching"], many["k"], many["matching"]) == (4, "hungarian", 16, "many-to-one")
    assert hung["miou"] == 1.0 and hung["miou_per_seed"] == [1.0, 1.0] and many["pixel_acc"] == 1.0
    assert r["pca_dim"] == 5 and r["feature_shape"] == [12, 8, 8] and r["eval_resolution"] == 32


def test_evaluate_clusters_forced_hungarian_with_extra_clusters() -> None:
    # Two clusters on class 0's pixels: Hungarian keeps one, the other's pixels count as wrong.
    maps = torch.tensor([[[0, 1], [2, 2]]])
    masks = torch.tensor([[[0, 0], [1, 1]]], dtype=torch.uint8)
    r = evaluate_clusters(maps, masks, 3, 2, matching="hungarian")
    assert r["mapping"] in ([0, UNMATCHED, 1], [UNMATCHED, 0, 1])
    assert r["iou_per_class"] == pytest.approx([0.5, 1.0]) and r["num_unmatched"] == 1
    many = evaluate_clusters(maps, masks, 3, 2)
    assert many["matching"] == "many-to-one" and many["miou"] == 1.0


def test_segment_retrieval_oracle_regions() -> None:
    feats, masks = _planted(12, 4, 0)
    vfeats, vmasks = _planted(6, 4, 1)
    r = segment_retrieval(feats, masks, vfeats, vmasks, 4, regions="classes", subset=[1, 3])
    assert r["miou"] == 1.0 and r["miou_subset"] == 1.0 and r["subset"] == [1, 3]
    # Foreground regions with one object class per image: background 0 plus class 1 or 2.
    fg = torch.zeros(8, 32, 32, dtype=torch.uint8)
    fg[:, 8:24, 8:24] = torch.tensor([1, 2] * 4, dtype=torch.uint8).view(8, 1, 1)
    fg_feats = _planted(8, 4, 2)[0] * 0
    fg_feats[:, 0, 2:6, 2:6] = (fg[:, 8, 8] == 1).float().view(8, 1, 1)
    fg_feats[:, 1, 2:6, 2:6] = (fg[:, 8, 8] == 2).float().view(8, 1, 1)
    r = segment_retrieval(fg_feats[:4], fg[:4], fg_feats[4:], fg[4:], 3, regions="foreground")
    assert r["miou"] == 1.0 and r["memory_size"] == 4 and r["num_queries"] == 4

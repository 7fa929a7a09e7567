"""Collapse indicators on hand-made embeddings: identical vectors, an orthonormal set, a queue."""

from __future__ import annotations

import math

import pytest
import torch

from densessl.eval.collapse import channel_std, dense_rows, effective_rank, mean_cosine


def test_identical_embeddings_have_no_spread_and_rank_one():
    same = torch.tensor([[3.0, -1.0, 2.0, 0.5]]).repeat(16, 1)
    assert channel_std(same) == pytest.approx(0.0, abs=1e-7)
    assert effective_rank(same) == pytest.approx(1.0)
    assert mean_cosine(same) == pytest.approx(1.0)


def test_an_orthonormal_set_has_full_rank_and_no_mean_similarity():
    d = 8
    basis = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0]
    # +/- each basis vector: centred, the 2d rows span all d directions with equal singular values
    rows = torch.cat([basis, -basis])
    assert effective_rank(rows) == pytest.approx(d, rel=1e-5)
    assert mean_cosine(rows) == pytest.approx(0.0, abs=1e-6)
    # +/-e_i: each channel holds one +1, one -1 and 2d - 2 zeros, so its std is sqrt(2 / (2d - 1))
    standard = torch.cat([torch.eye(d), -torch.eye(d)])
    assert channel_std(standard) == pytest.approx(math.sqrt(2 / (2 * d - 1)))


def test_rank_counts_the_directions_used():
    g = torch.Generator().manual_seed(1)
    two = torch.randn(200, 2, generator=g) @ torch.linalg.qr(torch.randn(16, 16, generator=g))[0][:2]
    assert 1.5 < effective_rank(two) <= 2.0 + 1e-5
    spread = torch.randn(2000, 16, generator=g)
    assert effective_rank(spread) > 14.0
    # random directions on the sphere: each normalised channel has std ~ 1/sqrt(D)
    assert channel_std(spread) == pytest.approx(1 / math.sqrt(16), rel=0.05)


def test_mean_cosine_between_sets_equals_the_pairwise_mean():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 6, generator=g), torch.randn(7, 6, generator=g)
    na, nb = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    assert mean_cosine(a, b) == pytest.approx(float((na @ nb.t()).mean()), rel=1e-5)


def test_dense_rows_are_normalised_locations_and_capped():
    features = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(3))
    rows = dense_rows(features)
    assert rows.shape == (24, 5)
    # row 0 is image 0 at (0, 0); row 13 is image 1 at (0, 1)
    torch.testing.assert_close(rows[0], torch.nn.functional.normalize(features[0, :, 0, 0], dim=0))
    torch.testing.assert_close(rows[13], torch.nn.functional.normalize(features[1, :, 0, 1], dim=0))
    assert dense_rows(features, max_rows=10).shape == (10, 5)


def test_too_few_rows_is_an_error():
    with pytest.raises(ValueError, match="N >= 2"):
        channel_std(torch.ones(1, 4))

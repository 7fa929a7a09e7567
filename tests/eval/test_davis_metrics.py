"""DAVIS J and F: region similarity, boundaries, statistics, per-sequence evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from densessl.eval.davis_metrics import (
    SUMMARY_KEYS,
    SequenceScores,
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    evaluate_sequence,
    region_similarity,
    statistics,
    summarize,
)


def box(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_region_similarity_hand_values() -> None:
    g = box((10, 10), 2, 6, 2, 6)  # 16 px
    assert region_similarity(g, box((10, 10), 2, 6, 3, 7)) == pytest.approx(12 / 20)
    assert region_similarity(g, box((10, 10), 2, 6, 4, 8)) == pytest.approx(8 / 24)
    assert region_similarity(g, g) == 1.0
    empty = np.zeros((10, 10), dtype=bool)
    assert region_similarity(empty, empty) == 1.0  # empty union counts as 1
    assert region_similarity(empty, g) == 0.0
    assert region_similarity(g, empty) == 0.0
    # void pixels are left out of intersection and union
    extra = g | box((10, 10), 2, 6, 6, 7)
    void = box((10, 10), 0, 10, 6, 7)
    assert region_similarity(g, extra) == pytest.approx(16 / 20)
    assert region_similarity(g, extra, void) == 1.0


def test_boundary_map_is_one_sided_and_thin() -> None:
    g = box((10, 10), 2, 6, 2, 6)
    edge = boundary_map(g)
    ring = box((10, 10), 1, 6, 1, 6) & ~box((10, 10), 2, 5, 2, 5)
    assert np.array_equal(edge, ring)  # the 5x5 ring from (1, 1) to (5, 5): 16 pixels
    # the image border is not a boundary
    assert not boundary_map(np.ones((6, 6), dtype=bool)).any()


def test_boundary_f_hand_values() -> None:
    g = box((10, 10), 2, 6, 2, 6)
    assert boundary_tolerance((10, 10)) == 1.0  # ceil(0.008 * 14.1)
    assert boundary_tolerance((480, 854)) == 8.0
    one = box((10, 10), 2, 6, 3, 7)
    # a one-pixel shift is within the 1 px tolerance of a 10x10 image
    assert boundary_f_measure(g, one) == pytest.approx(1.0)
    # with an exact match (tolerance 0) 8 of the 16 contour pixels coincide on each side
    assert boundary_f_measure(g, one, tolerance=0.0) == pytest.approx(0.5)
    # a two-pixel shift at 1 px: 10 of 16 contour pixels matched on each side
    two = box((10, 10), 2, 6, 4, 8)
    assert boundary_f_measure(g, two) == pytest.approx(10 / 16)
    assert boundary_f_measure(g, two, tolerance=2.0) == pytest.approx(1.0)
    empty = np.zeros((10, 10), dtype=bool)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, g) == 0.0  # precision 0, recall 1
    assert boundary_f_measure(g, empty) == 0.0  # precision 1, recall 0
    # void pixels are removed from both masks before the contours are drawn
    assert boundary_f_measure(g, two, void=box((10, 10), 0, 10, 0, 10)) == 1.0


def test_statistics_and_summary() -> None:
    mean, recall, decay = statistics(np.arange(10) / 10)
    # quarter bins over positions 0..9: [0, 2] and [7, 9]
    assert (mean, recall) == pytest.approx((0.45, 0.4))
    assert decay == pytest.approx(0.1 - 0.8)
    assert statistics(np.array([0.7])) == pytest.approx((0.7, 1.0, 0.0))
    a = SequenceScores("a", j=np.array([[1.0, 1.0], [0.0, 0.5]]), f=np.array([[1.0, 0.0], [1.0, 1.0]]))
    s = summarize([a])
    assert list(s)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS) and s["objects"] == 2
    assert s["J-Mean"] == pytest.approx(100 * (1.0 + 0.25) / 2)
    assert s["F-Mean"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert s["J&F-Mean"] == pytest.approx((s["J-Mean"] + s["F-Mean"]) / 2)
    assert s["J-Recall"] == pytest.approx(50.0)


def test_evaluate_sequence_skips_first_and_last_frame() -> None:
    gt = np.zeros((4, 10, 10), dtype=np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 7:9, 7:9] = 2
    pred = gt.copy()
    pred[0] = 0  # first and last frames are not scored
    pred[3] = 2
    pred[2, 7:9, 7:9] = 0  # object 2 lost in frame 2
    scores = evaluate_sequence(gt, pred, "s")
    assert scores.j.shape == (2, 2)
    np.testing.assert_allclose(scores.j, [[1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(scores.f, [[1.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="id 3"):
        evaluate_sequence(gt, np.full_like(gt, 3))

"""VOC average precision: by hand, the envelope, difficult items, ties, against sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from densessl.eval.ap import average_precision, mean_average_precision, voc_ap

# ranking + - + - - + : precision/recall points (1/3, 1) (1/3, 1/2) (2/3, 2/3) (2/3, 1/2) (2/3, 2/5) (1, 1/2)
SCORES_A = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]


LABELS_A = [1, -1, 1, -1, -1, 1]


def test_all_point_and_eleven_point_by_hand() -> None:
    # all-point: envelope 1, 2/3, 1/2 over three recall steps of 1/3
    assert average_precision(SCORES_A, LABELS_A) == pytest.approx(13 / 18)
    # 11-point: t = 0..0.3 -> 1 (4 values), 0.4..0.6 -> 2/3 (3), 0.7..1.0 -> 1/2 (4)
    assert average_precision(SCORES_A, LABELS_A, eleven_point=True) == pytest.approx(8 / 11)
    assert abs(13 / 18 - 8 / 11) > 1e-3  # the two definitions differ here
    # directly from points
    assert voc_ap([0.5, 1.0], [1.0, 0.5], eleven_point=False) == pytest.approx(0.75)
    assert voc_ap([0.5, 1.0], [1.0, 0.5], eleven_point=True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert voc_ap([], [], eleven_point=False) == 0.0


def test_envelope_raises_precision_to_the_best_later_value() -> None:
    # - + + : points (0, 0) (1/2, 1/2) (1, 2/3); the envelope lifts 1/2 to 2/3
    assert average_precision([3, 2, 1], [-1, 1, 1]) == pytest.approx(2 / 3)
    # without the envelope (sklearn's step sum) it would be 1/2 * 1/2 + 1/2 * 2/3
    assert average_precision_score([0, 1, 1], [3, 2, 1]) == pytest.approx(7 / 12)


def test_difficult_items_are_ignored() -> None:
    # difficult items at the very top and in the middle change nothing
    scores = [5.0, *SCORES_A[:3], 0.65, *SCORES_A[3:]]
    labels = [0, *LABELS_A[:3], 0, *LABELS_A[3:]]
    assert average_precision(scores, labels) == pytest.approx(13 / 18)
    # counted as negatives instead (the revisited protocol), the top one costs precision:
    # - + - + - - - + -> recall steps at precision 1/2, 2/4, 3/8 (envelope: 1/2, 1/2, 3/8)
    as_negative = [-1 if v == 0 else v for v in labels]
    assert average_precision(scores, as_negative) == pytest.approx((1 / 2 + 1 / 2 + 3 / 8) / 3)
    # only difficult and negative items: no positive, no AP
    assert math.isnan(average_precision([1.0, 0.5], [0, -1]))


def test_ties_form_one_threshold_whatever_their_order() -> None:
    # the two items tied at 0.9 enter together: points (1/2, 1/2) (1, 2/3) -> envelope 2/3
    assert average_precision([0.9, 0.9, 0.5], [1, -1, 1]) == pytest.approx(2 / 3)
    assert average_precision([0.9, 0.9, 0.5], [-1, 1, 1]) == pytest.approx(2 / 3)
    # a constant score ranks nothing: AP = the positive rate (the chance level)
    assert average_precision([0.0] * 4, [1, -1, -1, 1]) == pytest.approx(0.5)
    assert average_precision([0.0] * 4, [1, -1, -1, 1], eleven_point=True) == pytest.approx(0.5)


def test_matches_sklearn_where_the_definitions_coincide() -> None:
    # sklearn sums (recall step) x (precision at that step) without the monotone envelope. When the
    # precision at successive recall steps never increases, the envelope equals the raw precision
    # at every step, so both definitions give the same number. Here: + + - + - - + - - - + gives
    # precisions 1, 1, 3/4, 4/7, 5/11 at the recall steps.
    pattern = [1, 1, -1, 1, -1, -1, 1, -1, -1, -1, 1]
    scores = np.linspace(1.0, 0.0, len(pattern))
    expected = average_precision_score(np.array(pattern) == 1, scores)
    assert average_precision(scores, pattern) == pytest.approx(expected)
    assert average_precision(SCORES_A, LABELS_A) == pytest.approx(
        average_precision_score(np.array(LABELS_A) == 1, SCORES_A)
    )


def test_mean_average_precision_skips_classes_without_positives() -> None:
    scores = np.array([SCORES_A, [3, 2, 1, 0, -1, -2], [1, 2, 3, 4, 5, 6]], dtype=float).T
    labels = np.array([LABELS_A, [-1, 1, 1, -1, -1, -1], [-1, -1, 0, -1, -1, -1]]).T
    result = mean_average_precision(scores, labels)
    assert result["ap"][0] == pytest.approx(13 / 18)
    assert result["ap"][1] == pytest.approx(2 / 3)
    assert math.isnan(result["ap"][2])
    assert result["map"] == pytest.approx((13 / 18 + 2 / 3) / 2)
    assert result["classes_without_positives"] == [2]
    with pytest.raises(ValueError):
        average_precision([1.0, 2.0], [1, 2])

"""Average precision as the PASCAL VOC classification benchmarks compute it.

Ranking: items are sorted by decreasing score and precision / recall are taken at every
*distinct* score, so tied items enter the ranking together and the result does not depend on
the order in which ties happen to be listed.

Two ways to turn the precision-recall points into one number (:func:`voc_ap`):

- **all-point** (the default, VOC 2010+ and both VOC07 SVM protocols of the spec): the
  precision is first made monotone (at each recall level, the best precision reached at that
  recall or beyond), then the area under that step curve is summed over the recall increments;
- **11-point** (the original VOC 2007 devkit metric): the mean over the recall thresholds
  t = 0, 0.1, ..., 1 of the best precision reached at recall >= t (0 when recall t is never
  reached).

Labels follow the VOC ``ImageSets/Main/<cls>_<split>.txt`` convention: 1 = present, -1 =
absent, 0 = difficult. Difficult items are dropped before ranking: they are neither positives
nor negatives. A protocol that counts difficult items as negatives maps 0 to -1 first.

A class without any positive has no defined AP; the functions return ``nan`` for it and
:func:`mean_average_precision` leaves it out of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["average_precision", "mean_average_precision", "precision_recall", "voc_ap"]


def voc_ap(
    recall: Sequence[float] | np.ndarray, precision: Sequence[float] | np.ndarray, eleven_point: bool
) -> float:
    """AP from precision-recall points listed in ranking order (recall non-decreasing).

    See the module docstring for the all-point and 11-point definitions. Returns a fraction in
    [0, 1]; no points give 0.
    """
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision differ in length: {rec.size} vs {prec.size}")
    if rec.size == 0:
        return 0.0
    if np.any(np.diff(rec) < 0):
        raise ValueError("recall must be non-decreasing (points in ranking order)")
    if eleven_point:
        total = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            reached = prec[rec >= t - 1e-12]
            total += float(reached.max()) if reached.size else 0.0
        return total / 11.0
    # sentinels: recall 0 at the start, precision 0 beyond the last point
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # monotone envelope: the best precision at this recall level or any higher one
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def precision_recall(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall, precision at each distinct score (decreasing), and the number of positives.

    ``labels`` in {1, -1, 0}; items labelled 0 (difficult) are dropped first.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if not np.all(np.isin(y, (1, -1, 0))):
        raise ValueError("labels must be 1 (present), -1 (absent) or 0 (difficult)")
    if np.any(~np.isfinite(s)):
        raise ValueError("scores must be finite")
    keep = y != 0
    s, positive = s[keep], y[keep] == 1
    n_pos = int(positive.sum())
    order = np.argsort(-s, kind="stable")
    s, positive = s[order], positive[order]
    tp = np.cumsum(positive)
    fp = np.cumsum(~positive)
    # the last item of each group of equal scores closes a threshold
    last = np.flatnonzero(np.concatenate((s[1:] != s[:-1], [True]))) if s.size else np.zeros(0, np.int64)
    tp, fp = tp[last].astype(np.float64), fp[last].astype(np.float64)
    recall = tp / n_pos if n_pos else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, 1.0)
    return recall, precision, n_pos


def average_precision(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, eleven_point: bool = False
) -> float:
    """AP of one class (a fraction in [0, 1]) from scores and labels in {1, -1, 0}.

    Difficult items (0) are ignored. ``nan`` when no positive remains.
    """
    recall, precision, n_pos = precision_recall(scores, labels)
    if n_pos == 0:
        return math.nan
    return voc_ap(recall, precision, eleven_point)


def mean_average_precision(
    scores: np.ndarray, labels: np.ndarray, eleven_point: bool = False
) -> dict[str, object]:
    """Per-class AP and their mean for (N, C) scores and (N, C) labels in {1, -1, 0}.

    Returns ``{"ap": [C floats, nan where a class has no positive], "map": mean over the classes
    with an AP (nan if none), "classes_without_positives": [indices]}``; all values are fractions.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"scores and labels must both be (N, C), got {s.shape} and {y.shape}")
    aps = [average_precision(s[:, c], y[:, c], eleven_point) for c in range(s.shape[1])]
    defined = [a for a in aps if not math.isnan(a)]
    return {
        "ap": aps,
        "map": float(np.mean(defined)) if defined else math.nan,
        "classes_without_positives": [c for c, a in enumerate(aps) if math.isnan(a)],
    }

"""DAVIS-2017 semi-supervised scores: region similarity J, boundary accuracy F and their summary.

The definitions follow what the ``davis2017-evaluation`` script computes (spec A4):

- Objects of a sequence are the ids ``1..n``, ``n`` being the largest id in the *first* ground-truth
  frame (255 = void does not count). Each object is scored on its own binary masks.
- Only frames ``1..T-2`` are scored: the first (given) and the last frame are left out.
- **J** is the intersection over union of the predicted and true object masks, void pixels
  excluded; when both are empty (an empty union) J is 1.
- **F** is the F-measure of boundary precision and recall. A boundary pixel is a pixel whose
  label differs from its right, lower or lower-right neighbour (neighbours outside the image do
  not count), which gives one-pixel-wide contours. A boundary pixel of one mask is matched when a
  boundary pixel of the other lies within the tolerance (Euclidean distance <= tolerance, the
  disk dilation of the official script); the tolerance is ``ceil(0.008 * image diagonal)``
  pixels (8 px at 854x480). Void pixels are removed from both masks before the contours are
  drawn. With no predicted contour precision is 1 and recall 0; with no true contour precision
  is 0 and recall 1; with neither both are 1; F is 0 when precision + recall is 0.
- Per object: **Mean** is the mean over the scored frames, **Recall** the fraction of scored
  frames whose value exceeds 0.5, **Decay** the mean of the first quarter of the frames minus
  the mean of the last quarter (four bins whose edges are the positions
  ``round(linspace(1, n, 5)) - 1``, each bin including both of its edges).
- Dataset: every summary figure is a mean over *all objects of all sequences*, and
  ``J&F-Mean = (J-Mean + F-Mean) / 2``.

Void pixels (255 in the ground truth) are excluded as the spec states. The official script
actually zeroes 255 before it builds its void mask, so there they count as background; the
two agree on annotations without 255 (``ignore_void=False`` gives the script's behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOUNDARY_TOLERANCE",
    "SUMMARY_KEYS",
    "SequenceScores",
    "boundary_f_measure",
    "boundary_map",
    "boundary_tolerance",
    "evaluate_sequence",
    "region_similarity",
    "statistics",
    "summarize",
]

#: boundary tolerance as a fraction of the image diagonal (values >= 1 are taken as pixels)
BOUNDARY_TOLERANCE = 0.008
VOID = 255
#: the figures of the DAVIS tables, in their usual order
SUMMARY_KEYS: tuple[str, ...] = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _void(void: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if void is None:
        return None
    void = np.asarray(void, dtype=bool)
    if void.shape != shape:
        raise ValueError(f"void mask has shape {void.shape}, the masks {shape}")
    return void


def region_similarity(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J: IoU of two binary masks over the non-void pixels; 1.0 when their union is empty."""
    gt, pred = _binary(gt), _binary(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    void = _void(void, gt.shape)
    inter = gt & pred
    union = gt | pred
    if void is not None:
        keep = ~void
        inter &= keep
        union &= keep
    n_union = int(np.count_nonzero(union))
    if n_union == 0:
        return 1.0
    return int(np.count_nonzero(inter)) / n_union


def boundary_tolerance(shape: tuple[int, int], tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """Matching distance in pixels: ``tolerance`` itself if >= 1, else ``ceil(tolerance * diagonal)``."""
    if tolerance >= 1:
        return float(tolerance)
    return float(math.ceil(tolerance * math.hypot(shape[0], shape[1])))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel contours of a binary mask: pixels that differ from their right, lower or
    lower-right neighbour inside the image."""
    m = _binary(mask)
    edge = np.zeros(m.shape, dtype=bool)
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    edge[:-1, :] |= m[:-1, :] != m[1:, :]
    edge[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return edge


def _within(points: np.ndarray, reference: np.ndarray, radius: float) -> int:
    """How many ``points`` lie within ``radius`` (Euclidean) of a ``reference`` pixel."""
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~reference)
    return int(np.count_nonzero(points & (distance <= radius)))


def boundary_f_measure(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, tolerance: float = BOUNDARY_TOLERANCE
) -> float:
    """F: boundary F-measure of two binary masks (see the module docstring for the conventions)."""
    gt, pred = _binary(gt), _binary(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    void = _void(void, gt.shape)
    if void is not None:
        gt = gt & ~void
        pred = pred & ~void
    radius = boundary_tolerance(gt.shape, tolerance)
    gt_edge, pred_edge = boundary_map(gt), boundary_map(pred)
    n_gt, n_pred = int(np.count_nonzero(gt_edge)), int(np.count_nonzero(pred_edge))
    if n_gt == 0 and n_pred == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = _within(pred_edge, gt_edge, radius) / n_pred
        recall = _within(gt_edge, pred_edge, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """``(mean, recall, decay)`` of one object's per-frame values (fractions, not percentages)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.size
    if n == 0:
        raise ValueError(
            "no scored frames: a sequence needs at least 3 frames (first and last are not scored)"
        )
    mean = float(values.mean())
    recall = float(np.mean(values > 0.5))
    edges = (np.floor(np.linspace(1, n, 5) + 0.5) - 1).astype(np.int64)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    decay = float(first.mean() - last.mean())
    return mean, recall, decay


@dataclass
class SequenceScores:
    """Per-frame scores of one sequence: ``j`` and ``f`` are (objects, scored frames) arrays."""

    name: str
    j: np.ndarray
    f: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.j.shape[0])

    def object_statistics(self) -> list[dict[str, float]]:
        """Per object (id = position + 1): J/F Mean, Recall and Decay as fractions."""
        stats = []
        for jv, fv in zip(self.j, self.f, strict=True):
            jm, jr, jd = statistics(jv)
            fm, fr, fd = statistics(fv)
            stats.append(
                {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}
            )
        return stats


def evaluate_sequence(
    gt: np.ndarray,
    pred: np.ndarray,
    name: str = "",
    *,
    num_objects: int | None = None,
    tolerance: float = BOUNDARY_TOLERANCE,
    ignore_void: bool = True,
) -> SequenceScores:
    """Score predicted id maps ``pred`` (T, H, W) against ground truth ``gt`` (T, H, W), both
    uint8 object ids; frames 1..T-2 are scored.

    ``num_objects`` defaults to the largest non-void id of ``gt[0]``. A prediction holding a
    larger id is an error, as in the official script. ``ignore_void=False`` treats void (255)
    ground-truth pixels as background instead of leaving them out.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(
            f"expected (T, H, W) ground truth and prediction of one shape, got {gt.shape}, {pred.shape}"
        )
    if gt.shape[0] < 3:
        raise ValueError(f"sequence {name!r} has {gt.shape[0]} frames; scoring needs at least 3")
    if num_objects is None:
        first = gt[0]
        ids = first[first != VOID]
        num_objects = int(ids.max()) if ids.size else 0
    over = pred[(pred > num_objects) & (pred != 0)]
    if over.size:
        raise ValueError(
            f"prediction of sequence {name!r} holds id {int(over.max())} but it has {num_objects} objects"
        )
    scored = range(1, gt.shape[0] - 1)
    j = np.zeros((num_objects, len(scored)))
    f = np.zeros((num_objects, len(scored)))
    for col, t in enumerate(scored):
        void = gt[t] == VOID
        frame_void = void if ignore_void and void.any() else None
        for k in range(1, num_objects + 1):
            g, p = gt[t] == k, pred[t] == k
            j[k - 1, col] = region_similarity(g, p, frame_void)
            f[k - 1, col] = boundary_f_measure(g, p, frame_void, tolerance)
    return SequenceScores(name=name, j=j, f=f)


def summarize(sequences: Iterable[SequenceScores], percent: bool = True) -> dict[str, float]:
    """The DAVIS table: J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay, each a mean
    over all objects of all ``sequences``; in percent (as the DAVIS tables print them) unless
    ``percent=False``. Also ``objects``: how many objects were averaged."""
    per_object = [s for seq in sequences for s in seq.object_statistics()]
    if not per_object:
        raise ValueError("no objects to summarise")
    scale = 100.0 if percent else 1.0
    out = {key: scale * float(np.mean([s[key] for s in per_object])) for key in SUMMARY_KEYS[1:]}
    summary = {"J&F-Mean": 0.5 * (out["J-Mean"] + out["F-Mean"]), **out}
    return {**{key: summary[key] for key in SUMMARY_KEYS}, "objects": len(per_object)}

"""Segmentation metrics from one confusion matrix accumulated over a whole split.

Every dense evaluation in the library (linear probe, retrieval, clustering, fine-tuning) scores
its label maps with :class:`ConfusionMatrix`, so mIoU is defined in exactly one place:

* The matrix is accumulated over **all pixels of the split**, never averaged per image.
  Rows are ground truth, columns are predictions: ``cm[g, p]`` counts pixels with GT ``g``
  predicted as ``p``. Pixels whose GT equals ``ignore_index`` are skipped.
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` with ``TP_c = cm[c, c]``, ``FP_c`` the rest of
  column ``c`` and ``FN_c`` the rest of row ``c``.
* A class that appears neither in the ground truth nor in the predictions has a zero union,
  and implementations disagree on what it scores (``absent``):

  - ``"zero"``: the class scores 0 and still counts in the mean (Leopart, MaskContrast and
    Revisiting divide by ``max(union, eps)``). Use it for probe parity with those papers.
  - ``"nan"``: the class scores NaN and is dropped from the mean (mmsegmentation's
    ``nanmean``). Use it for fine-tuning parity.

  The same convention applies to per-class accuracy (recall), whose denominator is the GT
  pixel count of the class. A class that is predicted but absent from the ground truth has a
  non-zero union and scores IoU 0 under both conventions.

All returned values are plain Python floats and **fractions in [0, 1]** (multiply by 100 for
the percentages papers print).

Cluster matching (unsupervised segmentation, spec A5) also lives here, so that clusters are
turned into class predictions in one place:

* :func:`overlap_matrix` counts, over the pixels whose GT is not ``ignore_index``, how many
  pixels of each cluster fall on each class.
* :func:`hungarian_match` assigns clusters to classes one-to-one, maximising the summed IoU
  (MaskContrast, Leopart for K = number of classes) or the summed pixel overlap.
* :func:`many_to_one_match` sends every cluster to the class it has the highest precision with,
  i.e. its majority class (Leopart overclustering), or its best-IoU class.
* :func:`remap` applies a mapping to a cluster map.

A cluster that receives no class (more clusters than classes under Hungarian matching, or a
cluster without a single counted pixel) maps to :data:`UNMATCHED` (-1) unless another value is
asked for. ``-1`` is never a class: a :class:`ConfusionMatrix` built with
``unmatched_index=UNMATCHED`` counts such pixels as wrong (a miss for their GT class, a false
positive for no class). Leopart instead sends unmatched clusters to the background: pass
``unmatched=0``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

__all__ = [
    "UNMATCHED",
    "AbsentPolicy",
    "ConfusionMatrix",
    "hungarian_from_overlap",
    "hungarian_match",
    "many_to_one_from_overlap",
    "many_to_one_match",
    "overlap_matrix",
    "remap",
]

AbsentPolicy = Literal["zero", "nan"]

#: The label of a cluster that matching left without a class; never a valid class index.
UNMATCHED = -1


class ConfusionMatrix:
    """A ``num_classes`` x ``num_classes`` pixel confusion matrix (rows GT, columns prediction).

    ``update`` may be called with tensors of any shape and on any device; the counts are kept
    on the CPU as int64, so accumulating a whole split cannot overflow.

    ``unmatched_index`` (default ``None``: not allowed) names a prediction value that means "no
    class", e.g. :data:`UNMATCHED` for clusters that matching left without a class. A counted
    pixel predicted so is wrong: it adds to its GT class's false negatives (and to the pixel
    count) but is nobody's false positive. Such pixels are kept apart from :attr:`matrix`.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, unmatched_index: int | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        if unmatched_index is not None and 0 <= unmatched_index < num_classes:
            raise ValueError(f"unmatched_index={unmatched_index} is a class index of {num_classes} classes")
        self.unmatched_index = None if unmatched_index is None else int(unmatched_index)
        self._matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self._unmatched = torch.zeros(self.num_classes, dtype=torch.int64)

    @property
    def matrix(self) -> torch.Tensor:
        """A copy of the accumulated counts, int64 on the CPU, ``[gt, pred]``."""
        return self._matrix.clone()

    @property
    def unmatched(self) -> torch.Tensor:
        """Per GT class, the counted pixels predicted as ``unmatched_index`` (int64, CPU)."""
        return self._unmatched.clone()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._matrix.zero_()
        self._unmatched.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add the pixels of one batch: ``pred`` and ``target`` are integer label maps of equal shape.

        Pixels with ``target == ignore_index`` are skipped whatever their prediction. Any other
        target, and every prediction on a counted pixel, must lie in ``[0, num_classes)`` (or equal
        ``unmatched_index`` when one is set); anything else raises ``ValueError`` rather than
        silently corrupting the counts, and a rejected batch adds nothing.
        """
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must be integer label maps (take the argmax of logits first)")
        target = target.to(pred.device).reshape(-1).long()
        pred = pred.reshape(-1).long()
        valid = target != self.ignore_index
        target = target[valid]
        pred = pred[valid]
        if target.numel() == 0:
            return
        c = self.num_classes
        lost = None
        if self.unmatched_index is not None:
            miss = pred == self.unmatched_index
            if bool(miss.any()):
                lost = target[miss]
                if int(lost.min()) < 0 or int(lost.max()) >= c:
                    raise ValueError(
                        f"labels must lie in [0, {c}) or equal ignore_index={self.ignore_index}; "
                        f"found values in [{int(lost.min())}, {int(lost.max())}]"
                    )
                keep = ~miss
                target = target[keep]
                pred = pred[keep]
        if target.numel() > 0:
            # One reduction for both range checks keeps the device sync count at one per update.
            lo = torch.minimum(target.min(), pred.min())
            hi = torch.maximum(target.max(), pred.max())
            lo_v, hi_v = int(lo), int(hi)
            if lo_v < 0 or hi_v >= c:
                raise ValueError(
                    f"labels must lie in [0, {c}) or equal ignore_index={self.ignore_index}; "
                    f"found values in [{lo_v}, {hi_v}]"
                )
        # Nothing is added before every check has passed, so a rejected batch leaves no trace.
        if lost is not None:
            self._unmatched += torch.bincount(lost, minlength=c).cpu()
        if target.numel() == 0:
            return
        counts = torch.bincount(target * c + pred, minlength=c * c)
        self._matrix += counts.reshape(c, c).cpu()

    def compute(self, absent: AbsentPolicy = "zero") -> dict:
        """Derive the metrics from the accumulated counts.

        Returns a dict with

        * ``miou``: mean IoU over classes (see the module docstring for ``absent``);
        * ``iou_per_class``: list of ``num_classes`` IoUs (NaN for absent classes under ``"nan"``);
        * ``pixel_acc``: correctly labelled pixels / counted pixels;
        * ``mean_acc``: mean per-class accuracy (recall), same ``absent`` rule;
        * ``acc_per_class``: list of per-class accuracies;
        * ``fwiou``: frequency-weighted IoU, ``sum_c freq_c * IoU_c`` with ``freq_c`` the GT
          share of class ``c`` (classes without GT pixels carry no weight either way);
        * ``absent``: the convention used; ``num_classes``; ``num_pixels`` counted;
          ``num_present``: classes with a non-zero union.

        With ``unmatched_index`` set, the dict also holds ``num_unmatched``: counted pixels
        predicted as "no class" (they count as errors everywhere).

        With no pixels counted at all, every metric is NaN.
        """
        if absent not in ("zero", "nan"):
            raise ValueError(f"absent must be 'zero' or 'nan', got {absent!r}")
        cm = self._matrix.double()
        missed = self._unmatched.double()
        tp = cm.diagonal()
        gt_count = cm.sum(dim=1) + missed
        pred_count = cm.sum(dim=0)
        union = gt_count + pred_count - tp
        total = float(cm.sum() + missed.sum())
        fill = 0.0 if absent == "zero" else math.nan

        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, fill))
        acc = torch.where(gt_count > 0, tp / gt_count.clamp_min(1), torch.full_like(tp, fill))

        if total > 0:
            pixel_acc = float(tp.sum()) / total
            # Classes without GT pixels have zero weight, so their (0 or NaN) IoU must not leak in.
            fwiou = float(torch.where(gt_count > 0, gt_count / total * iou, torch.zeros_like(iou)).sum())
            miou = _mean(iou)
            mean_acc = _mean(acc)
        else:
            pixel_acc = fwiou = miou = mean_acc = math.nan

        result = {
            "miou": miou,
            "iou_per_class": [float(v) for v in iou],
            "pixel_acc": pixel_acc,
            "mean_acc": mean_acc,
            "acc_per_class": [float(v) for v in acc],
            "fwiou": fwiou,
            "absent": absent,
            "num_classes": self.num_classes,
            "num_pixels": int(total),
            "num_present": int((union > 0).sum()),
        }
        if self.unmatched_index is not None:
            result["num_unmatched"] = int(missed.sum())
        return result


def _mean(values: torch.Tensor) -> float:
    """Mean that skips NaNs; NaN (not a warning) when nothing is left."""
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() > 0 else math.nan


# ----------------------------------------------------------------------------------------------
# cluster-to-class matching (spec A5)
# ----------------------------------------------------------------------------------------------


def overlap_matrix(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_pred: int,
    num_target: int,
    ignore_index: int = 255,
) -> np.ndarray:
    """``(num_pred, num_target)`` int64 counts: ``[k, c]`` = pixels of cluster ``k`` with GT ``c``.

    ``pred`` (cluster ids in ``[0, num_pred)``) and ``target`` (classes in ``[0, num_target)`` or
    ``ignore_index``) are integer maps of equal shape; pixels with GT ``ignore_index`` are skipped.
    """
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must be integer label maps")
    if num_pred < 1 or num_target < 1:
        raise ValueError(f"num_pred and num_target must be positive, got {num_pred} and {num_target}")
    pred = pred.reshape(-1).long().cpu()
    target = target.reshape(-1).long().cpu()
    valid = target != ignore_index
    pred, target = pred[valid], target[valid]
    if pred.numel() == 0:
        return np.zeros((num_pred, num_target), dtype=np.int64)
    if int(pred.min()) < 0 or int(pred.max()) >= num_pred:
        raise ValueError(
            f"cluster ids must lie in [0, {num_pred}); found [{int(pred.min())}, {int(pred.max())}]"
        )
    if int(target.min()) < 0 or int(target.max()) >= num_target:
        raise ValueError(
            f"labels must lie in [0, {num_target}) or equal ignore_index={ignore_index}; "
            f"found [{int(target.min())}, {int(target.max())}]"
        )
    counts = torch.bincount(pred * num_target + target, minlength=num_pred * num_target)
    return counts.reshape(num_pred, num_target).numpy()


def _iou_table(overlap: np.ndarray) -> np.ndarray:
    """IoU of every (cluster, class) pair from their pixel overlap counts."""
    overlap = overlap.astype(np.float64)
    union = overlap.sum(axis=1, keepdims=True) + overlap.sum(axis=0, keepdims=True) - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def hungarian_match(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_pred: int,
    num_target: int,
    ignore_index: int = 255,
    *,
    objective: Literal["iou", "pixels"] = "iou",
    unmatched: int = UNMATCHED,
) -> np.ndarray:
    """One-to-one cluster-to-class assignment; returns ``mapping`` (num_pred,) int64.

    ``mapping[k]`` is the class of cluster ``k``. The assignment maximises the sum over matched
    pairs of their IoU (``objective="iou"``, as MaskContrast and Leopart do) or of their pixel
    overlap (``"pixels"``), counted over the pixels whose GT is not ``ignore_index``. It is
    solved exactly with ``scipy.optimize.linear_sum_assignment``. With more clusters than
    classes, the clusters left over map to ``unmatched`` (default :data:`UNMATCHED`, i.e. -1:
    always wrong; ``0`` gives Leopart's "to the background"); with fewer, some classes are never
    predicted.
    """
    overlap = overlap_matrix(pred, target, num_pred, num_target, ignore_index)
    return hungarian_from_overlap(overlap, objective=objective, unmatched=unmatched)


def hungarian_from_overlap(
    overlap: np.ndarray, *, objective: Literal["iou", "pixels"] = "iou", unmatched: int = UNMATCHED
) -> np.ndarray:
    """:func:`hungarian_match` on an :func:`overlap_matrix` (e.g. summed over chunks of a split)."""
    from scipy.optimize import linear_sum_assignment

    if objective not in ("iou", "pixels"):
        raise ValueError(f"objective must be 'iou' or 'pixels', got {objective!r}")
    overlap = np.asarray(overlap)
    score = _iou_table(overlap) if objective == "iou" else overlap.astype(np.float64)
    rows, cols = linear_sum_assignment(score, maximize=True)
    mapping = np.full(overlap.shape[0], unmatched, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def many_to_one_match(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_pred: int,
    num_target: int,
    ignore_index: int = 255,
    *,
    criterion: Literal["precision", "iou"] = "precision",
    unmatched: int = UNMATCHED,
) -> np.ndarray:
    """Every cluster to one class, several clusters may share a class; returns ``mapping`` (num_pred,).

    ``criterion="precision"`` (Leopart's overclustering) sends cluster ``k`` to the class holding
    most of its counted pixels, i.e. its majority class; ``"iou"`` (MaskContrast's majority vote
    with more clusters than classes) to its best-IoU class. Ties go to the lower class index. A
    cluster without a single counted pixel maps to ``unmatched``.
    """
    overlap = overlap_matrix(pred, target, num_pred, num_target, ignore_index)
    return many_to_one_from_overlap(overlap, criterion=criterion, unmatched=unmatched)


def many_to_one_from_overlap(
    overlap: np.ndarray, *, criterion: Literal["precision", "iou"] = "precision", unmatched: int = UNMATCHED
) -> np.ndarray:
    """:func:`many_to_one_match` on an :func:`overlap_matrix`."""
    if criterion not in ("precision", "iou"):
        raise ValueError(f"criterion must be 'precision' or 'iou', got {criterion!r}")
    overlap = np.asarray(overlap)
    score = overlap if criterion == "precision" else _iou_table(overlap)
    mapping = score.argmax(axis=1).astype(np.int64)
    mapping[overlap.sum(axis=1) == 0] = unmatched
    return mapping


def remap(pred: torch.Tensor | np.ndarray, mapping: np.ndarray | torch.Tensor | list[int]):
    """``mapping[pred]``: cluster ids to class ids, keeping the input's type (tensor or array) and device.

    ``pred`` must hold integers in ``[0, len(mapping))``.
    """
    is_numpy = isinstance(pred, np.ndarray)
    pred_t = torch.as_tensor(pred)
    if pred_t.is_floating_point():
        raise ValueError("pred must be an integer cluster map")
    table = torch.as_tensor(np.asarray(mapping), dtype=torch.int64, device=pred_t.device)
    if table.ndim != 1:
        raise ValueError(f"mapping must be one-dimensional, got shape {tuple(table.shape)}")
    if pred_t.numel() and (int(pred_t.min()) < 0 or int(pred_t.max()) >= table.numel()):
        raise ValueError(
            f"cluster ids must lie in [0, {table.numel()}); found [{int(pred_t.min())}, {int(pred_t.max())}]"
        )
    out = table[pred_t.long()]
    return out.numpy() if is_numpy else out

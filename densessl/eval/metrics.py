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
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

__all__ = ["AbsentPolicy", "ConfusionMatrix"]

AbsentPolicy = Literal["zero", "nan"]


class ConfusionMatrix:
    """A ``num_classes`` x ``num_classes`` pixel confusion matrix (rows GT, columns prediction).

    ``update`` may be called with tensors of any shape and on any device; the counts are kept
    on the CPU as int64, so accumulating a whole split cannot overflow.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @property
    def matrix(self) -> torch.Tensor:
        """A copy of the accumulated counts, int64 on the CPU, ``[gt, pred]``."""
        return self._matrix.clone()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._matrix.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add the pixels of one batch: ``pred`` and ``target`` are integer label maps of equal shape.

        Pixels with ``target == ignore_index`` are skipped whatever their prediction. Any other
        target, and every prediction on a counted pixel, must lie in ``[0, num_classes)``;
        anything else raises ``ValueError`` rather than silently corrupting the counts.
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
        # One reduction for both range checks keeps the device sync count at one per update.
        lo = torch.minimum(target.min(), pred.min())
        hi = torch.maximum(target.max(), pred.max())
        lo_v, hi_v = int(lo), int(hi)
        if lo_v < 0 or hi_v >= c:
            raise ValueError(
                f"labels must lie in [0, {c}) or equal ignore_index={self.ignore_index}; "
                f"found values in [{lo_v}, {hi_v}]"
            )
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

        With no pixels counted at all, every metric is NaN.
        """
        if absent not in ("zero", "nan"):
            raise ValueError(f"absent must be 'zero' or 'nan', got {absent!r}")
        cm = self._matrix.double()
        tp = cm.diagonal()
        gt_count = cm.sum(dim=1)
        pred_count = cm.sum(dim=0)
        union = gt_count + pred_count - tp
        total = float(cm.sum())
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

        return {
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


def _mean(values: torch.Tensor) -> float:
    """Mean that skips NaNs; NaN (not a warning) when nothing is left."""
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() > 0 else math.nan

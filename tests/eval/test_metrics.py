"""Segmentation metrics: the confusion matrix, and cluster-to-class matching (Hungarian, many-to-one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densessl.eval.metrics import (
    UNMATCHED,
    ConfusionMatrix,
    hungarian_match,
    many_to_one_match,
    overlap_matrix,
    remap,
)

# 4 classes; class 3 appears neither in the GT nor (on counted pixels) in the prediction. The two
# ignore pixels carry predictions 0 and 3, which must not be counted.
GT = torch.tensor([0, 0, 0, 1, 1, 2, 255, 255])
PRED = torch.tensor([0, 0, 1, 1, 2, 2, 0, 3])


def _filled() -> ConfusionMatrix:
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    return cm


def test_hand_computed_matrix() -> None:
    expected = torch.tensor([[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(_filled().matrix, expected)


def test_zero_convention() -> None:
    r = _filled().compute(absent="zero")
    assert r["absent"] == "zero"
    assert r["iou_per_class"] == pytest.approx([2 / 3, 1 / 3, 1 / 2, 0.0])
    assert r["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 4)
    assert r["pixel_acc"] == pytest.approx(4 / 6)
    assert r["acc_per_class"] == pytest.approx([2 / 3, 1 / 2, 1.0, 0.0])
    assert r["mean_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 4)
    assert r["fwiou"] == pytest.approx(19 / 36)
    assert r["num_pixels"] == 6
    assert r["num_present"] == 3
    assert all(type(r[k]) is float for k in ("miou", "pixel_acc", "mean_acc", "fwiou"))


def test_nan_convention() -> None:
    r = _filled().compute(absent="nan")
    assert r["absent"] == "nan"
    assert r["iou_per_class"][:3] == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert math.isnan(r["iou_per_class"][3])
    assert r["miou"] == pytest.approx(0.5)
    assert r["mean_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # Conventions only differ for absent classes: pixel accuracy and fwIoU are unchanged.
    assert r["pixel_acc"] == pytest.approx(4 / 6)
    assert r["fwiou"] == pytest.approx(19 / 36)


def test_predicted_but_not_in_gt_scores_zero_in_both() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2]), torch.tensor([0, 0]))
    for absent in ("zero", "nan"):
        r = cm.compute(absent=absent)
        assert r["iou_per_class"][2] == 0.0
        assert r["iou_per_class"][0] == pytest.approx(0.5)
    assert math.isnan(cm.compute(absent="nan")["iou_per_class"][1])
    assert cm.compute(absent="nan")["miou"] == pytest.approx(0.25)
    assert cm.compute(absent="zero")["miou"] == pytest.approx(0.5 / 3)


def test_accumulates_over_split_not_per_image() -> None:
    gen = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 5, (6, 7, 9), generator=gen)
    gt[gt == 4] = 255
    pred = torch.randint(0, 4, (6, 7, 9), generator=gen)
    whole = ConfusionMatrix(4)
    whole.update(pred, gt)
    parts = ConfusionMatrix(4)
    for i in range(6):
        parts.update(pred[i], gt[i])
    assert torch.equal(whole.matrix, parts.matrix)
    assert whole.matrix.sum() == int((gt != 255).sum())
    parts.reset()
    assert parts.matrix.sum() == 0


def test_numpy_inputs_and_custom_ignore() -> None:
    cm = ConfusionMatrix(2, ignore_index=-1)
    cm.update(np.array([[0, 1], [1, 1]]), np.array([[0, -1], [1, 0]]))
    assert torch.equal(cm.matrix, torch.tensor([[1, 1], [0, 1]]))


def test_rejects_bad_input() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        cm.compute(absent="skip")  # type: ignore[arg-type]
    # A prediction outside the range on an ignored pixel is harmless.
    cm.update(torch.tensor([0, 9]), torch.tensor([0, 255]))
    assert cm.matrix.sum() == 1


def test_empty_matrix_is_nan() -> None:
    r = ConfusionMatrix(3).compute()
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_acc"]) and math.isnan(r["fwiou"])


def test_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(1)
    num_classes = 6
    gt = torch.randint(0, num_classes, (4000,), generator=gen)
    gt[gt == 5] = 255  # class 5 never in GT; predictions below never reach it either
    gt[torch.rand(4000, generator=gen) < 0.1] = 255
    pred = torch.randint(0, 5, (4000,), generator=gen)
    # Bias predictions toward the truth so IoUs differ between classes.
    agree = torch.rand(4000, generator=gen) < 0.5
    pred = torch.where(agree & (gt != 255), gt, pred)

    cm = ConfusionMatrix(num_classes)
    cm.update(pred, gt)
    valid = gt != 255
    g, p = gt[valid].numpy(), pred[valid].numpy()
    labels = list(range(num_classes))

    assert np.array_equal(cm.matrix.numpy(), metrics.confusion_matrix(g, p, labels=labels))
    jac = metrics.jaccard_score(g, p, labels=labels, average=None, zero_division=0)
    r = cm.compute(absent="zero")
    assert r["iou_per_class"] == pytest.approx(list(jac))
    assert r["miou"] == pytest.approx(float(np.mean(jac)))
    assert r["pixel_acc"] == pytest.approx(metrics.accuracy_score(g, p))
    assert cm.compute(absent="nan")["miou"] == pytest.approx(float(np.mean(jac[:5])))


def _pairs(overlap: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (cluster, class) pixel lists realising an overlap table, plus two ignored pixels."""
    pred, target = [], []
    for k, row in enumerate(overlap):
        for c, count in enumerate(row):
            pred += [k] * count
            target += [c] * count
    return np.array(pred + [0, 1]), np.array(target + [255, 255])


def test_overlap_matrix_skips_ignore() -> None:
    pred, target = _pairs([[4, 0], [3, 3], [0, 1]])
    assert overlap_matrix(pred, target, 3, 2).tolist() == [[4, 0], [3, 3], [0, 1]]


def test_hungarian_hand_computed_with_unmatched_cluster() -> None:
    # Cluster sizes 4, 6, 1; class sizes 7, 4. IoUs: (0,0)=4/7, (1,1)=3/7, (1,0)=3/10, (2,1)=1/4.
    # Best one-to-one: 0->0, 1->1 (sum 1.0); cluster 2 is left over.
    pred, target = _pairs([[4, 0], [3, 3], [0, 1]])
    assert hungarian_match(pred, target, 3, 2).tolist() == [0, 1, UNMATCHED]
    assert hungarian_match(pred, target, 3, 2, unmatched=0).tolist() == [0, 1, 0]  # Leopart: background


def test_hungarian_iou_and_pixel_objectives_differ() -> None:
    # Row sums 11, 6, 8; column sums 13, 3, 9.
    # identity: pixels 8+0+7 = 15, IoU 8/16 + 0 + 7/10 = 1.200
    # 0->1, 1->0, 2->2: pixels 2+5+7 = 14, IoU 2/12 + 5/14 + 7/10 = 1.224
    pred, target = _pairs([[8, 2, 1], [5, 0, 1], [0, 1, 7]])
    assert hungarian_match(pred, target, 3, 3).tolist() == [1, 0, 2]
    assert hungarian_match(pred, target, 3, 3, objective="pixels").tolist() == [0, 1, 2]


def test_hungarian_fewer_clusters_than_classes() -> None:
    pred, target = _pairs([[1, 5, 0], [0, 1, 6]])
    assert hungarian_match(pred, target, 2, 3).tolist() == [1, 2]


def test_many_to_one_precision_iou_and_empty_cluster() -> None:
    # Cluster 0: 5 px of class 0, 4 of class 1; class 0 has 100 px in all. Precision: class 0
    # (5/9 > 4/9); IoU: class 1 (4/9 against 5/104). Cluster 2 has no counted pixel.
    pred, target = _pairs([[5, 4], [95, 0]])
    pred = np.concatenate([pred, [2, 2]])
    target = np.concatenate([target, [255, 255]])
    assert many_to_one_match(pred, target, 3, 2).tolist() == [0, 0, UNMATCHED]
    assert many_to_one_match(pred, target, 3, 2, criterion="iou").tolist() == [1, 0, UNMATCHED]


def test_remap_keeps_type_and_checks_range() -> None:
    mapping = np.array([2, 0, UNMATCHED])
    assert remap(np.array([[0, 1], [2, 0]]), mapping).tolist() == [[2, 0], [-1, 2]]
    out = remap(torch.tensor([1, 0]), mapping)
    assert isinstance(out, torch.Tensor) and out.tolist() == [0, 2]
    with pytest.raises(ValueError):
        remap(np.array([3]), mapping)


def test_confusion_matrix_counts_unmatched_as_wrong() -> None:
    cm = ConfusionMatrix(2, unmatched_index=UNMATCHED)
    cm.update(torch.tensor([0, -1, 1, -1, 0]), torch.tensor([0, 0, 1, 1, 255]))
    r = cm.compute()
    # class 0: TP 1, FN 1 (unmatched), FP 0 -> 1/2; class 1 likewise.
    assert r["iou_per_class"] == pytest.approx([0.5, 0.5])
    assert r["pixel_acc"] == pytest.approx(0.5) and r["num_unmatched"] == 2 and r["num_pixels"] == 4
    assert cm.unmatched.tolist() == [1, 1] and cm.matrix.sum() == 2
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update(torch.tensor([-1]), torch.tensor([0]))
    with pytest.raises(ValueError):
        ConfusionMatrix(2, unmatched_index=1)

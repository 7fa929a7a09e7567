"""Tests for the confusion-matrix segmentation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densessl.eval.metrics import ConfusionMatrix

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

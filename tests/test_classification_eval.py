"""VOC average precision, the classification readers and fixtures, and the image-level protocols."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_limits

from densessl.config import ConfigError, ModelConfig
from densessl.data.base import DataError
from densessl.data.classification import (
    VOC07_CLASSES,
    ImageFolderClassification,
    VOC07Classification,
    write_image_folder_fixture,
    write_voc07_fixture,
)
from densessl.eval.ap import average_precision, mean_average_precision, voc_ap
from densessl.eval.classification import (
    LINEAR_COSTS,
    OPENSELFSUP_COSTS,
    run_knn,
    run_linear,
    run_svm_voc07,
)
from densessl.eval.classification_cli import add_commands
from densessl.models.backbones import backbone_from_config

STANDARD_ORDER = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip
IMAGE_SIZE = 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny problems: thread pools (torch, BLAS) only add start-up and contention on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- AP

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


# --------------------------------------------------------------------------- readers and fixtures


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("voc07")
    voc = write_voc07_fixture(out, n_train=30, n_val=30, n_test=40, image_size=IMAGE_SIZE)
    assert voc == out / "VOCdevkit" / "VOC2007"
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("folders")
    write_image_folder_fixture(out / "train", per_class=8, image_size=40)
    write_image_folder_fixture(out / "val", per_class=6, image_size=40, seed=1)
    return out


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return backbone_from_config(ModelConfig(arch="resnet18", small_input=True, width=0.125)).eval()


def _labels_from_annotations(voc: Path, stem: str) -> np.ndarray:
    row = np.full(20, -1, dtype=np.int8)
    for obj in ET.parse(voc / "Annotations" / f"{stem}.xml").getroot().iter("object"):
        c = STANDARD_ORDER.index(obj.findtext("name"))
        if obj.findtext("difficult") == "0":
            row[c] = 1
        elif row[c] != 1:
            row[c] = 0
    return row


def test_voc07_reader_reads_the_fixture_back(voc_root: Path) -> None:
    voc = voc_root / "VOCdevkit" / "VOC2007"
    assert list(VOC07_CLASSES) == STANDARD_ORDER
    for split, n in (("train", 30), ("val", 30), ("trainval", 60), ("test", 40)):
        ds = VOC07Classification(voc_root, split)
        assert ds.classes == STANDARD_ORDER and len(ds) == n
        assert ds.labels.shape == (n, 20) and ds.labels.dtype == np.int8
        for i, stem in enumerate(ds.stems):
            np.testing.assert_array_equal(ds.labels[i], _labels_from_annotations(voc, stem))
        # every class is present in every split
        assert ((ds.labels == 1).sum(axis=0) >= 1).all()
    trainval = VOC07Classification(voc / "..", "trainval")  # VOCdevkit itself also works
    assert (trainval.labels == 0).any(), "the fixture has difficult-only labels"
    assert trainval.stems == VOC07Classification(voc, "train").stems + VOC07Classification(voc, "val").stems
    # the devkit's text format: "<stem> <label:2d>"
    first = (voc / "ImageSets" / "Main" / "aeroplane_trainval.txt").read_text().splitlines()[0]
    assert first == f"{trainval.stems[0]}  1"
    image, row = trainval[0]
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(row, trainval.labels[0])
    assert trainval.describe(0).endswith(f"JPEGImages/{trainval.stems[0]}.jpg")


def test_voc07_reader_errors(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no PASCAL VOC 2007 folder"):
        VOC07Classification(tmp_path / "missing", "test")
    with pytest.raises(DataError, match="missing"):
        VOC07Classification(voc_root, "nosuchsplit")
    copy = tmp_path / "copy"
    shutil.copytree(voc_root, copy)
    voc = copy / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main" / "cat_test.txt").unlink()
    with pytest.raises(DataError, match="cat_test.txt"):
        VOC07Classification(copy, "test")
    ds = VOC07Classification(copy, "train")
    bad = voc / "JPEGImages" / f"{ds.stems[1]}.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=bad.name):
        ds[1]
    bad.unlink()
    with pytest.raises(DataError, match="missing"):
        VOC07Classification(copy, "train")


CUSTOM = {"aeroplane": "glider", "bicycle": "tandem", "bird": "kite"}


def custom_voc07(voc_root: Path, tmp_path: Path) -> Path:
    """A custom data set in the VOC07 layout, without labels.txt: three of the fixture's classes
    under other names, the other class files removed."""
    copy = tmp_path / "custom"
    shutil.copytree(voc_root, copy)
    main = copy / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    for path in main.glob("*_*.txt"):
        name, split = path.stem.rsplit("_", 1)
        if name in CUSTOM:
            path.rename(main / f"{CUSTOM[name]}_{split}.txt")
        else:
            path.unlink()
    return copy


def test_voc07_layout_without_labels_txt_names_its_classes(voc_root: Path, tmp_path: Path) -> None:
    copy = custom_voc07(voc_root, tmp_path)
    pascal = VOC07Classification(voc_root, "train")
    ds = VOC07Classification(copy, "train")
    assert ds.classes == ["glider", "kite", "tandem"]  # sorted
    columns = [STANDARD_ORDER.index(n) for n in ("aeroplane", "bird", "bicycle")]
    np.testing.assert_array_equal(ds.labels, pascal.labels[:, columns])


def test_svm_voc07_on_a_custom_layout(voc_root: Path, backbone: torch.nn.Module, tmp_path: Path) -> None:
    copy = custom_voc07(voc_root, tmp_path)
    train, test = VOC07Classification(copy, "trainval"), VOC07Classification(copy, "test")
    result = run_svm_voc07(backbone, train, test, "revisited", image_size=IMAGE_SIZE)
    assert list(result["ap_per_class"]) == ["glider", "kite", "tandem"]
    assert all(0 <= v <= 100 for v in result["ap_per_class"].values())
    # a class named by one split only is an error, not a shifted column
    (copy / "VOCdevkit/VOC2007/ImageSets/Main/kite_test.txt").unlink()
    with pytest.raises(DataError, match=r"only in training \['kite'\], only in test none"):
        run_svm_voc07(backbone, train, VOC07Classification(copy, "test"), "revisited", image_size=IMAGE_SIZE)


def test_image_folder_reader(folders: Path, tmp_path: Path) -> None:
    ds = ImageFolderClassification(folders / "train")
    assert ds.classes == sorted(["circle", "square", "wide", "tall", "small"])
    assert len(ds) == 40 and np.bincount(ds.labels).tolist() == [8] * 5
    # images in sub/ folders are found too, and labels follow the folder
    assert any("/sub/" in ds.describe(i) for i in range(len(ds)))
    for i in (0, 17, 39):
        image, label = ds[i]
        assert image.shape == (40, 40, 3) and label == ds.labels[i]
        assert f"/{ds.classes[label]}/" in ds.describe(i)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderClassification(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderClassification(tmp_path / "empty")
    copy = tmp_path / "copy"
    shutil.copytree(folders / "train", copy)
    (copy / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra contains no images"):
        ImageFolderClassification(copy)
    (copy / "zebra").rmdir()
    corrupt = copy / "wide" / "0000.jpg"
    corrupt.write_bytes(b"\xff\xd8 truncated")
    ds = ImageFolderClassification(copy)
    index = next(i for i in range(len(ds)) if ds.describe(i) == str(corrupt))
    with pytest.raises(DataError, match="0000.jpg"):
        ds[index]


# --------------------------------------------------------------------------- protocols


def test_svm_revisited_end_to_end(voc_root: Path, backbone: torch.nn.Module, tmp_path: Path) -> None:
    train = VOC07Classification(voc_root, "trainval")
    test = VOC07Classification(voc_root, "test")
    result = run_svm_voc07(backbone, train, test, "revisited", image_size=IMAGE_SIZE, cache_dir=tmp_path)
    assert result["variant"] == "revisited" and result["feature_dim"] == backbone.out_channels
    assert result["costs"] == [0.5] and result["cv_folds"] == 0
    assert result["difficult_test"] == "negative" and result["ap"] == "all-point"
    assert list(result["ap_per_class"]) == STANDARD_ORDER
    assert all(0 <= v <= 100 for v in result["ap_per_class"].values())
    assert 0 <= result["map"] <= 100
    # colour identifies the class: far better than a constant score
    assert result["map"] > result["chance_map"] + 8
    json.dumps(result, allow_nan=False)
    # same seed, same numbers (the second run reads the cached features)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    again = run_svm_voc07(backbone, train, test, "revisited", image_size=IMAGE_SIZE, cache_dir=tmp_path)
    assert again["ap_per_class"] == result["ap_per_class"]


def test_svm_openselfsup_end_to_end(voc_root: Path, backbone: torch.nn.Module) -> None:
    assert len(OPENSELFSUP_COSTS) == 19 and OPENSELFSUP_COSTS[:3] == (1.0, 10.0, 100.0)
    assert min(OPENSELFSUP_COSTS) == 0.5**19
    train = VOC07Classification(voc_root, "trainval")
    test = VOC07Classification(voc_root, "test")
    costs = (1.0, 0.0625, 0.001953125)
    result = run_svm_voc07(backbone, train, test, "openselfsup", image_size=IMAGE_SIZE, costs=costs)
    assert result["feature_dim"] == 4 * backbone.out_channels  # 2x2 grid
    assert result["difficult_test"] == "ignored" and result["cv_folds"] == 3
    assert set(result["cost_per_class"].values()) <= set(costs)
    assert result["cv_skipped_classes"] == [] and result["skipped_classes"] == []
    assert 0 <= result["map"] <= 100 and result["map"] > result["chance_map"] + 8
    with pytest.raises(ConfigError):
        run_svm_voc07(backbone, train, test, "fair", image_size=IMAGE_SIZE)


def test_missing_scikit_learn_is_a_config_error(
    voc_root: Path, backbone: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = VOC07Classification(voc_root, "train")
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes "import sklearn" fail
    with pytest.raises(ConfigError, match="pip install scikit-learn"):
        run_svm_voc07(backbone, train, train, image_size=IMAGE_SIZE)


def test_knn_scores_far_above_chance_with_a_random_backbone(folders: Path, backbone) -> None:
    train = ImageFolderClassification(folders / "train")
    val = ImageFolderClassification(folders / "val")
    result = run_knn(backbone, train, val, image_size=IMAGE_SIZE)
    assert result["k"] == 20 and result["temperature"] == 0.07 and result["num_classes"] == 5
    assert result["top1"] >= 60  # chance: 20
    assert result["top5"] == 100.0  # 5 classes: every class is in the top 5
    again = run_knn(backbone, train, val, image_size=IMAGE_SIZE)
    assert {**again, "seconds": 0} == {**result, "seconds": 0}
    capped = run_knn(backbone, train, val, image_size=IMAGE_SIZE, k=1000, centre_crop=False)
    assert capped["k"] == len(train)
    with pytest.raises(ConfigError):
        run_knn(backbone, train, val, image_size=IMAGE_SIZE, temperature=0)
    with pytest.raises(DataError, match="different classes"):
        run_knn(backbone, train, ImageFolderClassification(folders / "val" / "tall"), image_size=IMAGE_SIZE)


def test_linear_on_cached_features(folders: Path, backbone) -> None:
    train = ImageFolderClassification(folders / "train")
    val = ImageFolderClassification(folders / "val")
    result = run_linear(backbone, train, val, image_size=IMAGE_SIZE)
    assert result["classifier"] == "linear (LR on cached features)"
    assert result["cost"] in LINEAR_COSTS and len(result["holdout_top1"]) == len(LINEAR_COSTS)
    assert result["top1"] >= 60 and 0 <= result["top1"] <= result["top5"] <= 100
    again = run_linear(backbone, train, val, image_size=IMAGE_SIZE)
    assert (again["top1"], again["cost"]) == (result["top1"], result["cost"])


# --------------------------------------------------------------------------- CLI


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    parser = argparse.ArgumentParser()
    evals = parser.add_subparsers(dest="protocol")
    add_commands(evals)
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_cli_commands(voc_root: Path, folders: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--weights", "random", "--arch", "resnet18", "--small-input", "--width", "0.125"]
    common = [*model, "--image-size", str(IMAGE_SIZE), "--batch-size", "32", "--device", "cpu"]
    out = _run_cli(["svm-voc07", "--data", str(voc_root), *common], capsys)
    assert out["protocol"] == "svm-voc07" and out["weights"] == "random" and out["data"] == str(voc_root)
    assert out["variant"] == "revisited" and 0 <= out["map"] <= 100 and len(out["ap_per_class"]) == 20
    out = _run_cli(["knn", "--data", str(folders), "--k", "5", *common], capsys)
    assert out["protocol"] == "knn" and out["k"] == 5 and out["train"] == str(folders / "train")
    out = _run_cli(
        ["linear", "--train", str(folders / "train"), "--val", str(folders / "val"), "--costs", "1", *common],
        capsys,
    )
    assert out["protocol"] == "linear" and out["data"] is None and out["cost"] == 1.0
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol"))
    args = parser.parse_args(["knn", "--train", str(folders / "train"), *common])
    with pytest.raises(ConfigError, match="--val"):
        args.func(args)

"""The image-level protocols (SVM on VOC07, k-NN, linear) and their commands, on written fixtures."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from densessl.config import ConfigError, ModelConfig
from densessl.data.base import DataError
from densessl.data.classification import (
    ImageFolderClassification,
    VOC07Classification,
    write_image_folder_fixture,
    write_voc07_fixture,
)
from densessl.eval.classification import (
    LINEAR_COSTS,
    OPENSELFSUP_COSTS,
    run_knn,
    run_linear,
    run_svm_voc07,
)
from densessl.eval.classification_cli import add_commands
from densessl.models.backbones import backbone_from_config
from tests.export.helpers import mgc_checkpoint

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


# --------------------------------------------------------------------------- fixtures


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


# --------------------------------------------------------------------------- ViT backbones


def test_knn_linear_and_svm_on_an_mgc_vit_use_the_mean_of_its_patch_tokens(
    voc_root: Path, folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mgc_checkpoint(tmp_path / "mgc.pth")
    # 36 px: not a multiple of the patch size (8), so the images go in at 32 px
    vit = ["--weights", str(tmp_path / "mgc.pth"), "--image-size", "36", "--device", "cpu"]
    for argv in (["knn", "--data", str(folders)], ["linear", "--data", str(folders), "--costs", "1"]):
        out = _run_cli([*argv, *vit], capsys)
        assert out["feature_dim"] == 192 and out["pooling"] == "mean of patch tokens"
        assert 0 <= out["top1"] <= out["top5"] <= 100
    query = _run_cli(["svm-voc07", "--data", str(voc_root), *vit], capsys)
    teacher = _run_cli(["svm-voc07", "--data", str(voc_root), *vit, "--encoder", "teacher"], capsys)
    assert query["pooling"] == "mean of patch tokens" and 0 <= query["map"] <= 100
    assert query["ap_per_class"] != teacher["ap_per_class"]  # two networks, two sets of scores
    out = _run_cli(
        ["svm-voc07", "--data", str(voc_root), *vit, "--variant", "openselfsup", "--costs", "1"], capsys
    )
    assert out["feature_dim"] == 4 * 192 and 0 <= out["map"] <= 100

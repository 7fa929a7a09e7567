"""The segmentation commands (seg-probe, seg-nn, seg-cluster) on synthetic and written data."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from densessl.data.base import DataError
from densessl.data.segsets import (
    write_ade20k_fixture,
    write_leopart_voc_fixture,
)
from densessl.eval.segmentation_cli import add_commands, load_segmentation_data
from tests.export.helpers import MOCO_VIT, densessl_checkpoint, mgc_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny; on a loaded 2-core machine a second intra-op thread only adds
    # spin-waiting (an FCN probe step went from ~4 ms to ~50 ms).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = ["--weights", "random", "--arch", "resnet18", "--small-input", "--width", "0.125"]
SYNTH = ["--data", "synthetic:easy", "--synthetic-train", "12", "--synthetic-val", "6"]


def _run(argv: list[str], capsys) -> dict:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_cli_seg_probe_linear_and_fcn(tmp_path, capsys) -> None:
    argv = ["seg-probe", *TINY, *SYNTH, "--epochs", "2", "--seeds", "0", "1", "--cache-dir", str(tmp_path)]
    r = _run(argv, capsys)
    assert r["protocol"] == "seg-probe" and r["weights"] == "random" and r["data"] == "synthetic:easy"
    for key in ("miou", "miou_std", "miou_per_seed", "pixel_acc", "iou_per_class", "num_classes", "seconds"):
        assert key in r
    assert (
        r["num_classes"] == 7
        and r["image_size"] == 64
        and r["train_resolution"] == 32
        and r["head"] == "linear"
    )
    assert len(list(tmp_path.glob("*.pt"))) == 2
    r = _run(
        ["seg-probe", *TINY, *SYNTH, "--head", "fcn", "--fcn-channels", "8", "--epochs", "1", "--seeds", "0"],
        capsys,
    )
    assert r["head"] == "fcn" and 0.0 <= r["miou"] <= 100.0


def test_cli_seg_nn_on_synthetic_and_leopart_layout(tmp_path, capsys) -> None:
    r = _run(["seg-nn", *TINY, *SYNTH, "--k", "5"], capsys)
    assert r["protocol"] == "seg-nn" and r["k"] == 5 and r["memory_size"] == 12 * 64 and r["void"] == "zero"
    assert r["image_size"] == 64 and r["eval_resolution"] == [64, 64] and r["num_classes"] == 7
    root = write_leopart_voc_fixture(tmp_path)
    data = ["--data", f"leopart-voc:{root}", "--train-split", "trainaug", "--image-size", "32"]
    r = _run(["seg-nn", *TINY, *data], capsys)
    assert r["num_classes"] == 21 and r["num_train"] == 5 and r["num_val"] == 2 and 0 <= r["miou"] <= 100


def test_cli_seg_nn_prints_the_library_figures_in_percent(capsys) -> None:
    from densessl.eval.cli_common import backbone_from_args
    from densessl.eval.retrieval import run_nn_retrieval

    argv = ["seg-nn", *TINY, *SYNTH, "--k", "5"]
    printed = _run(argv, capsys)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol", required=True))
    args = parser.parse_args(argv)
    data = load_segmentation_data("synthetic:easy", synthetic_train=12, synthetic_val=6)
    raw = run_nn_retrieval(
        backbone_from_args(args), data.train, data.val, data.num_classes, image_size=64, k=5, void="zero"
    )
    assert printed["unit"] == "percent"
    assert printed["miou"] == pytest.approx(100 * raw["miou"]) and raw["miou"] > 0.01
    assert printed["pixel_acc"] == pytest.approx(100 * raw["pixel_acc"])
    assert printed["iou_per_class"] == pytest.approx([100 * v for v in raw["iou_per_class"]])
    assert printed["k"] == raw["k"] and printed["num_pixels"] == raw["num_pixels"]


def test_to_percent_scales_fractions_at_any_depth_and_nothing_else() -> None:
    from densessl.eval.segmentation_cli import to_percent

    result = {
        "miou": 0.25,
        "num_classes": 7,
        "k": 7,
        "absent": "zero",
        "miou_per_seed": [0.2, 0.3],
        "clusterings": [{"k": 7, "miou": 0.5, "pixel_acc_std": 0.01, "iou_per_class": [1.0, float("nan")]}],
        "retrieval": {"miou": 0.1, "miou_subset": None, "num_queries": 4, "subset": [1, 3]},
        "eval_resolution": [64, 64],
    }
    out = to_percent(result)
    assert out["miou"] == 25.0 and out["miou_per_seed"] == [20.0, 30.0]
    assert out["num_classes"] == 7 and out["k"] == 7 and out["absent"] == "zero"
    assert out["clusterings"][0]["miou"] == 50.0 and out["clusterings"][0]["pixel_acc_std"] == 1.0
    assert out["clusterings"][0]["iou_per_class"][0] == 100.0
    assert np.isnan(out["clusterings"][0]["iou_per_class"][1]) and out["clusterings"][0]["k"] == 7
    assert out["retrieval"] == {"miou": 10.0, "miou_subset": None, "num_queries": 4, "subset": [1, 3]}
    assert out["eval_resolution"] == [64, 64] and result["miou"] == 0.25  # the input is left alone


def test_cli_seg_cluster(tmp_path, capsys) -> None:
    argv = ["seg-cluster", *TINY, *SYNTH, "--seeds", "0", "1", "--n-init", "1", "--clusters", "7", "14"]
    r = _run(argv, capsys)
    assert r["protocol"] == "seg-cluster" and [c["k"] for c in r["clusterings"]] == [7, 14]
    assert r["miou"] == r["clusterings"][0]["miou"] and r["retrieval"]["regions"] == "foreground"
    assert 0.0 <= r["retrieval"]["miou"] <= 100.0 and r["eval_resolution"] == 64
    root = write_ade20k_fixture(tmp_path)
    data = ["--data", f"ade20k:{root}", "--image-size", "32"]
    r = _run(["seg-cluster", *TINY, *data, "--seeds", "0", "--n-init", "1", "--clusters", "4"], capsys)
    assert r["num_classes"] == 150 and r["retrieval"]["regions"] == "classes"
    assert r["clusterings"][0]["matching"] == "hungarian" and r["num_val"] == 2


def test_cli_data_errors() -> None:
    with pytest.raises(DataError, match="voc:ROOT or synthetic"):
        load_segmentation_data("imagenet:/x")
    with pytest.raises(DataError, match="preset"):
        load_segmentation_data("synthetic:nope")
    with pytest.raises(DataError):
        load_segmentation_data("cityscapes:/does/not/exist")


# --- ViT backbones --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mgc_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("mgc") / "checkpoint0800.pth"
    mgc_checkpoint(path)
    return path


@pytest.mark.parametrize("encoder", ["query", "teacher"])
def test_cli_seg_probe_on_an_mgc_vit_reads_its_patch_tokens(mgc_file, encoder, capsys) -> None:
    # 36 px is not a multiple of the patch size (8): the images go in at 32 px
    argv = ["seg-probe", "--weights", str(mgc_file), "--encoder", encoder, *SYNTH, "--image-size", "36"]
    probe = ["--preset", "leopart", "--train-resolution", "18", "--epochs", "1", "--batch-size", "6"]
    r = _run([*argv, *probe], capsys)
    assert r["head"] == "linear" and r["image_size"] == 36
    assert np.isfinite(r["miou"]) and 0 <= r["miou"] <= 100
    assert np.isfinite(r["iou_per_class"]).all() and np.isfinite(r["pixel_acc"])
    assert r["lr"] == 0.01  # Leopart's learning rate for a ViT (0.1 for a ResNet)


def test_cli_seg_nn_and_cluster_on_a_densessl_vit(tmp_path, capsys) -> None:
    densessl_checkpoint(tmp_path / "v.pt", "quick/mocov2_synthetic.yaml", MOCO_VIT)
    vit = ["--weights", str(tmp_path / "v.pt"), *SYNTH, "--image-size", "40"]
    r = _run(["seg-nn", *vit, "--k", "5"], capsys)
    assert r["feature_shape"][-2:] == [5, 5] and np.isfinite(r["miou"])
    r = _run(["seg-cluster", *vit, "--seeds", "0", "--n-init", "1", "--pca-dim", "8"], capsys)
    assert np.isfinite(r["miou"]) and np.isfinite(r["retrieval"]["miou"])

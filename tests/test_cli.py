"""The command line on tiny data: synthetic VOC on disk, a probe reading it, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from densessl.cli import main
from densessl.data.voc import VOCSegmentation


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_synth_then_seg_probe_on_the_voc_layout(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "voc"), "--train", "12", "--val", "6"]) == 0
    root = Path(last_json(capsys.readouterr().out)["voc_root"])
    assert (root / "ImageSets/Segmentation/train.txt").read_text().split() == [
        f"train_{i:06d}" for i in range(12)
    ]
    assert len(VOCSegmentation(root, "val")) == 6
    code = main(
        [
            "eval",
            "seg-probe",
            "--weights",
            "random",
            "--arch",
            "resnet18",
            "--small-input",
            "--width",
            "0.25",
            "--data",
            f"voc:{tmp_path / 'voc'}",
            "--image-size",
            "64",
            "--epochs",
            "2",
            "--seeds",
            "0",
            "1",
        ]
    )
    result = last_json(capsys.readouterr().out)
    assert code == 0
    assert result["protocol"] == "seg-probe" and len(result["miou_per_seed"]) == 2
    assert result["unit"] == "percent" and 0.0 <= result["miou"] <= 100.0 and result["num_classes"] == 9
    assert result["miou"] == pytest.approx(sum(result["miou_per_seed"]) / 2)


def test_eval_needs_an_architecture_for_random_weights(capsys):
    code = main(["eval", "seg-probe", "--weights", "random", "--data", "synthetic"])
    assert code == 2 and "--arch" in capsys.readouterr().err


def test_missing_weights_file_is_one_line(capsys):
    code = main(["eval", "seg-probe", "--weights", "nope.pth", "--data", "synthetic"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "densessl: error: weights not found: nope.pth"


def test_bad_data_spec(capsys):
    code = main(["eval", "seg-probe", "--weights", "random", "--arch", "resnet18", "--data", "imagenet:/x"])
    assert code == 2 and "voc:ROOT or synthetic" in capsys.readouterr().err

"""Reading other projects' checkpoint layouts: MoCo, DenseCL, SlotCon, MGC; refusals and inspect."""

from __future__ import annotations

import argparse
import json
import pickle

import numpy as np
import pytest
import torch
import torchvision

from densessl.cli import main
from densessl.config import ModelConfig, from_dict
from densessl.export import export, inspect_checkpoint, load_backbone, read_checkpoint
from densessl.training.checkpoint import CheckpointError
from tests.export.helpers import MOCO_R18, RESNET18, densessl_checkpoint, state_of


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def test_moco_reference_checkpoint(tmp_path):
    q, k = state_of(ModelConfig(arch="resnet50"), 0), state_of(ModelConfig(arch="resnet50"), 1)
    state = {**prefixed(q, "module.encoder_q."), **prefixed(k, "module.encoder_k.")}
    state |= {
        "module.encoder_q.fc.0.weight": torch.zeros(2048, 2048),
        "module.encoder_q.fc.2.weight": torch.zeros(128, 2048),
    }
    state |= {"module.queue": torch.zeros(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save(
        {"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {}}, tmp_path / "moco.pth.tar"
    )
    info = export(tmp_path / "moco.pth.tar", tmp_path / "moco.pkl", to="detectron2")
    assert info["layout"] == "moco" and info["encoder"] == "query" and info["epoch"] == 200
    with open(tmp_path / "moco.pkl", "rb") as f:
        d2 = pickle.load(f)["model"]
    assert np.array_equal(d2["res5.2.conv3.weight"], q["layer4.2.conv3.weight"].numpy())
    assert not any("fc" in name for name in d2)


def test_densecl_training_and_extracted_checkpoints(tmp_path):
    q, k = state_of(ModelConfig(arch="resnet18"), 0), state_of(ModelConfig(arch="resnet18"), 1)
    state = {**prefixed(q, "encoder_q.0."), **prefixed(k, "encoder_k.0."), **prefixed(q, "backbone.")}
    state |= {
        "encoder_q.1.mlp.0.weight": torch.zeros(4, 512),
        "queue": torch.zeros(128, 8),
        "queue2": torch.zeros(128, 8),
    }
    torch.save({"meta": {"epoch": 800}, "state_dict": state, "optimizer": {}}, tmp_path / "epoch_800.pth")
    export(tmp_path / "epoch_800.pth", tmp_path / "q.pth", to="mmdet")
    export(tmp_path / "epoch_800.pth", tmp_path / "k.pth", to="mmdet", encoder="teacher")
    assert torch.equal(
        torch.load(tmp_path / "q.pth")["state_dict"]["layer1.0.conv1.weight"], q["layer1.0.conv1.weight"]
    )
    assert torch.equal(
        torch.load(tmp_path / "k.pth")["state_dict"]["layer1.0.conv1.weight"], k["layer1.0.conv1.weight"]
    )

    torch.save({"state_dict": q, "author": "DenseCL"}, tmp_path / "densecl_r18.pth")
    contents = read_checkpoint(tmp_path / "densecl_r18.pth")
    assert contents.layout == "bare" and contents.model == RESNET18


def test_slotcon_reference_checkpoint_with_a_pickled_namespace(tmp_path):
    q, k = state_of(ModelConfig(arch="resnet18"), 0), state_of(ModelConfig(arch="resnet18"), 1)
    state = {
        **prefixed(q, "module.encoder_q."),
        **prefixed(k, "module.encoder_k."),
        "module.center": torch.zeros(1, 8),
    }
    state["module.grouping_k.slot_embed.weight"] = torch.zeros(8, 4)
    args = argparse.Namespace(arch="resnet18", dataset="COCO", epochs=800, batch_size=64, num_prototypes=256)
    torch.save({"args": args, "model": state, "epoch": 800}, tmp_path / "ckpt_epoch_800.pth")
    info = export(tmp_path / "ckpt_epoch_800.pth", tmp_path / "slotcon.pth")
    assert info["layout"] == "slotcon" and info["encoder"] == "teacher"
    assert torch.equal(
        torch.load(tmp_path / "slotcon.pth")["layer2.0.downsample.0.weight"],
        k["layer2.0.downsample.0.weight"],
    )
    report = inspect_checkpoint(tmp_path / "ckpt_epoch_800.pth")
    assert report["exported_encoder"] == "teacher" and report["config"]["num_prototypes"] == 256


@pytest.mark.parametrize("wrapped", [True, False], ids=["checkpoint", "last.pth"])
def test_mgc_reference_checkpoint(tmp_path, wrapped):
    online = state_of(ModelConfig(arch="vit_small", num_heads=8), 0)
    momentum = state_of(ModelConfig(arch="vit_small", num_heads=8), 1)
    state = {**prefixed(online, "base_encoder."), **prefixed(momentum, "momentum_encoder.")}
    state["projector_pixel.0.weight"] = torch.zeros(4, 384)
    obj = {"epoch": 800, "state_dict": state, "optimizer": {}} if wrapped else state
    torch.save(obj, tmp_path / "mgc.pth")
    info = export(tmp_path / "mgc.pth", tmp_path / "vits16.pth", to="vit")
    assert info["layout"] == "mgc" and info["model"]["num_heads"] == 8
    out = torch.load(tmp_path / "vits16.pth")
    assert set(out) == set(online) and torch.equal(
        out["blocks.3.attn.qkv.weight"], online["blocks.3.attn.qkv.weight"]
    )
    backbone = load_backbone(tmp_path / "vits16.pth")
    assert backbone.num_heads == 8


def test_a_checkpoint_without_a_recognisable_encoder_is_refused_in_one_line(tmp_path, capsys):
    torch.save({"state_dict": {"classifier.weight": torch.zeros(3, 3)}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no recognisable encoder"):
        read_checkpoint(tmp_path / "odd.pth")
    assert main(["export", str(tmp_path / "odd.pth"), "--out", str(tmp_path / "o.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("densessl: error:") and "no recognisable encoder" in err and "\n" not in err
    assert not (tmp_path / "o.pth").exists()


def test_inspect_reports_a_densessl_checkpoint(tmp_path, capsys):
    densessl_checkpoint(tmp_path / "c.pt", "quick/mocov2_synthetic.yaml", MOCO_R18)
    assert main(["inspect", str(tmp_path / "c.pt")]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["method"] == "mocov2" and report["step"] == 7 and report["exported_encoder"] == "query"
    assert report["backbone"] == "resnet18"
    assert report["encoders"]["query"]["parameters"] == sum(
        p.numel() for p in torchvision.models.resnet18().parameters()
    ) - (512 * 1000 + 1000)
    assert "<- exported" in out and "detectron2" in report["formats"]
    assert from_dict(torch.load(tmp_path / "c.pt", weights_only=False)["config"]).train.batch_size == 128

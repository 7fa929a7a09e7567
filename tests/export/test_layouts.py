"""Reading other projects' checkpoint layouts: MoCo, DenseCL, SlotCon, MGC; refusals and inspect."""

from __future__ import annotations

import argparse
import json
import pickle

import numpy as np
import pytest
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer

from densessl.cli import main
from densessl.config import ModelConfig, from_dict
from densessl.export import export, inspect_checkpoint, load_backbone, read_checkpoint
from densessl.training.checkpoint import CheckpointError
from tests.export.helpers import (
    MOCO_R18,
    MOCO_VIT,
    RESNET18,
    TINY_VIT,
    densessl_checkpoint,
    mgc_checkpoint,
    state_of,
)


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


# --- a reference MGC checkpoint of a (tiny) ViT ---------------------------------------------------


def timm_vit(num_heads: int) -> VisionTransformer:
    """timm's own ViT of :data:`TINY_VIT`'s shape: the model the exported keys must fit."""
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=num_heads, num_classes=0
    )


@pytest.mark.parametrize("wrapped", [True, False], ids=["checkpoint0800", "state_dict"])
@pytest.mark.parametrize(
    ("fmt", "suffix"), [("vit", ".pth"), ("timm", ".pth"), ("safetensors", ".safetensors")]
)
def test_an_mgc_checkpoint_exports_the_bare_timm_keys_of_the_encoder_asked_for(
    tmp_path, wrapped, fmt, suffix
):
    online, momentum = mgc_checkpoint(tmp_path / "mgc.pth", wrapped=wrapped)
    expected = set(timm_vit(8).state_dict())
    assert set(online) == expected  # the helper's encoders are timm's bare ViT
    for role, mine, other in (
        ("query", online, momentum),
        ("teacher", momentum, online),
        (None, online, momentum),
    ):
        out = tmp_path / f"{role}{suffix}"
        info = export(tmp_path / "mgc.pth", out, to=fmt, encoder=role)
        assert info["layout"] == "mgc" and info["encoder"] == (role or "query")
        assert info["model"] == {**TINY_VIT, "num_heads": 8}  # MGC's heads: not in the weights
        # two blocks at 32 px is no timm model: the construction that loads the file is named
        assert info["standard_architecture"] is False
        assert "patch_size=8, embed_dim=192, depth=2, num_heads=8, num_classes=0)" in info["load_with"]
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(out)
        else:
            state = torch.load(out)
        assert set(state) == expected, sorted(set(state) ^ expected)
        for key, value in state.items():
            assert torch.equal(value, mine[key]), (role, key)
        assert not torch.equal(state["blocks.1.attn.qkv.weight"], other["blocks.1.attn.qkv.weight"])
        reference = timm_vit(8).eval()
        reference.load_state_dict(state, strict=True)
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(load_backbone(out).tokens(x), reference.forward_features(x))


def test_a_ddp_wrapped_mgc_checkpoint_is_read_too(tmp_path):
    online, momentum = mgc_checkpoint(tmp_path / "mgc.pth", ddp=True)
    contents = read_checkpoint(tmp_path / "mgc.pth")
    assert contents.layout == "mgc" and contents.epoch == 800
    assert set(contents.encoders["teacher"]) == set(momentum)
    assert torch.equal(
        contents.encoders["teacher"]["blocks.0.mlp.fc1.weight"], momentum["blocks.0.mlp.fc1.weight"]
    )
    assert torch.equal(
        contents.encoders["query"]["blocks.0.mlp.fc1.weight"], online["blocks.0.mlp.fc1.weight"]
    )


def test_inspect_describes_an_mgc_vit_and_says_its_heads_are_assumed(tmp_path, capsys):
    mgc_checkpoint(tmp_path / "checkpoint0800.pth")
    assert main(["inspect", str(tmp_path / "checkpoint0800.pth")]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["layout"] == "mgc" and report["epoch"] == 800 and report["exported_encoder"] == "query"
    assert report["backbone"] == "vit_tiny/8 (depth 2)" and set(report["encoders"]) == {"query", "teacher"}
    assert report["vit"] == {
        "patch_size": 8,
        "img_size": 32,
        "width": 192,
        "depth": 2,
        "num_heads": 8,
        "num_heads_recorded": False,
    }
    assert "vit: patch 8, position table for 32 px, width 192, 2 blocks, 8 heads (not recorded" in out
    assert report["formats"] == ["timm", "safetensors", "vit"]
    assert main(["inspect", str(tmp_path / "checkpoint0800.pth"), "--num-heads", "3"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["vit"]["num_heads"] == 3 and report["vit"]["num_heads_recorded"] is True


def test_inspect_describes_a_densessl_vit(tmp_path, capsys):
    densessl_checkpoint(tmp_path / "v.pt", "quick/mocov2_synthetic.yaml", MOCO_VIT)
    assert main(["inspect", str(tmp_path / "v.pt")]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["method"] == "mocov2" and report["backbone"] == "vit_tiny/8 (depth 2)"
    assert report["vit"]["num_heads"] == 3 and report["vit"]["num_heads_recorded"] is True
    assert "3 heads\n" in out


def test_revisited_moco_checkpoint_with_its_backbone_queue(tmp_path):
    """The revisited-MoCo repository's ``checkpoint.pth.tar``: the MoCo layout plus a 2048-d
    backbone queue, which must stay out of every export."""
    from densessl.export.formats import torchvision_keys

    q, k = state_of(ModelConfig(arch="resnet18"), 0), state_of(ModelConfig(arch="resnet18"), 1)
    state = {**prefixed(q, "module.encoder_q."), **prefixed(k, "module.encoder_k.")}
    state |= {
        "module.encoder_q.fc.0.weight": torch.zeros(512, 512),
        "module.encoder_q.fc.2.bias": torch.zeros(128),
    }
    state |= {"module.encoder_k.fc.0.weight": torch.zeros(512, 512)}
    state |= {"module.queue": torch.zeros(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    state |= {"module.queue_backbone": torch.randn(512, 16)}
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": state, "optimizer": {}}, path)
    for role, expected in (("query", q), ("teacher", k)):
        info = export(path, tmp_path / f"{role}.pth", to="torchvision", encoder=role)
        assert info["layout"] == "moco" and info["epoch"] == 800
        exported = torch.load(tmp_path / f"{role}.pth")
        assert set(exported) == torchvision_keys({"arch": "resnet18"})
        assert all(torch.equal(exported[name], expected[name]) for name in exported)

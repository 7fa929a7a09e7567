"""Export and transfer: key sets per target, round trips, reference layouts, refusals, inspect."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from densessl.cli import main
from densessl.config import ModelConfig, from_dict, load_config, to_dict
from densessl.export import export, inspect_checkpoint, load_backbone, read_checkpoint
from densessl.export.formats import (
    FORMATS,
    convert,
    detectron2_keys,
    key_mismatch,
    to_detectron2_name,
    torchvision_keys,
)
from densessl.models.backbones import backbone_from_config
from densessl.training.checkpoint import FORMAT, CheckpointError
from densessl.training.trainer import build_model

ROOT = Path(__file__).resolve().parent.parent


def state_of(model: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    backbone = backbone_from_config(model)
    for m in backbone.modules():  # non-trivial statistics so a swap of running stats would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return backbone.state_dict()


RESNET18 = {"arch": "resnet18", "small_input": False, "width": 1.0}
RESNET50 = {"arch": "resnet50", "small_input": False, "width": 1.0}
VIT_S = {"arch": "vit_small", "patch_size": 16, "img_size": 224, "num_heads": 8}


# --- key sets -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [RESNET18, RESNET50], ids=["r18", "r50"])
@pytest.mark.parametrize("fmt", ["torchvision", "timm", "safetensors", "detectron2", "mmdet", "mmseg"])
def test_resnet_export_has_exactly_the_target_keys(model, fmt):
    state = state_of(ModelConfig(arch=model["arch"]))
    converted = convert(state, model, fmt)
    assert set(converted) == FORMATS[fmt].expected_keys(model)


def test_detectron2_names_follow_its_scheme():
    # the expected set is laid out from detectron2's scheme, independently of the renaming rules
    tv = {k for k in torchvision_keys(RESNET50) if not k.endswith("num_batches_tracked")}
    assert {to_detectron2_name(k) for k in tv} == detectron2_keys(RESNET50)
    keys = detectron2_keys(RESNET50)
    for name in [
        "stem.conv1.weight",
        "stem.conv1.norm.running_var",
        "res2.0.shortcut.weight",
        "res2.0.shortcut.norm.bias",
        "res3.3.conv3.norm.weight",
        "res5.2.conv2.weight",
    ]:
        assert name in keys
    assert not any(k.startswith(("layer", "fc", "conv1", "bn1")) for k in keys)
    r18 = detectron2_keys(RESNET18)
    assert "res2.0.shortcut.weight" not in r18 and "res3.0.shortcut.weight" in r18
    assert not any("conv3" in k for k in r18)


def test_timm_and_mmcv_resnets_use_torchvision_names():
    assert set(timm.create_model("resnet50", num_classes=0).state_dict()) == torchvision_keys(RESNET50)
    assert FORMATS["mmseg"].expected_keys(RESNET50) == torchvision_keys(RESNET50)


@pytest.mark.parametrize("fmt", ["timm", "vit", "safetensors"])
def test_vit_export_has_exactly_the_bare_timm_keys(fmt):
    state = state_of(ModelConfig(arch="vit_small", num_heads=8))
    converted = convert(state, VIT_S, fmt)
    assert set(converted) == set(VisionTransformer(embed_dim=384, num_heads=8, num_classes=0).state_dict())
    assert {
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.11.mlp.fc2.bias",
        "norm.weight",
    } <= set(converted)


def test_formats_refuse_the_wrong_backbone_family_with_the_usable_ones():
    vit = state_of(ModelConfig(arch="vit_small"))
    with pytest.raises(CheckpointError, match="use one of: timm, safetensors, vit"):
        convert(vit, VIT_S, "detectron2")
    with pytest.raises(CheckpointError, match="takes vit backbones"):
        convert(state_of(ModelConfig(arch="resnet18")), RESNET18, "vit")


def test_a_wrong_key_set_is_refused_listing_missing_and_unexpected_keys():
    state = state_of(ModelConfig(arch="resnet18"))
    state.pop("layer4.1.bn2.weight")
    state["encoder.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        convert(state, RESNET18, "mmseg")
    assert "missing 1: layer4.1.bn2.weight" in str(err.value) and "unexpected 1: encoder.extra" in str(
        err.value
    )
    assert key_mismatch({"a"}, {"a"}) is None


# --- densessl checkpoints and round trips --------------------------------------------------------


def densessl_checkpoint(path: Path, recipe: str, overrides: list[str]) -> nn.Module:
    config = load_config(ROOT / "densessl/recipes" / recipe, overrides)
    torch.manual_seed(0)
    method = build_model(config)
    with torch.no_grad():  # make the teacher differ from the student
        for p in method.parameters():
            if not p.requires_grad:
                p.add_(0.01)
    ckpt = {"format": FORMAT, "config": to_dict(config), "model": method.state_dict(), "step": 7, "epoch": 1}
    torch.save(ckpt, path)
    return method


MOCO_R18 = ["model.arch=resnet18", "model.small_input=false", "model.width=1.0", "method.queue_size=16"]


def test_torchvision_round_trip_gives_the_same_features(tmp_path):
    method = densessl_checkpoint(tmp_path / "ckpt.pt", "quick/mocov2_synthetic.yaml", MOCO_R18)
    info = export(tmp_path / "ckpt.pt", tmp_path / "r18.pth", to="torchvision")
    assert info["encoder"] == "query" and info["method"] == "mocov2" and info["format"] == "torchvision"
    reference = torchvision.models.resnet18()
    reference.fc = nn.Identity()
    reference.load_state_dict(torch.load(tmp_path / "r18.pth"), strict=True)
    trunk = nn.Sequential(*list(reference.children())[:-2]).eval()
    x = torch.randn(2, 3, 64, 64)
    ours = method.export_encoder().eval()
    with torch.no_grad():
        assert torch.allclose(trunk(x), ours(x), atol=1e-5)
        assert torch.allclose(load_backbone(tmp_path / "r18.pth")(x), ours(x), atol=1e-5)


def test_timm_round_trip_resnet_and_vit(tmp_path):
    method = densessl_checkpoint(tmp_path / "r.pt", "quick/mocov2_synthetic.yaml", MOCO_R18)
    export(tmp_path / "r.pt", tmp_path / "r18_timm.pth", to="timm")
    reference = timm.create_model("resnet18", num_classes=0)
    reference.load_state_dict(torch.load(tmp_path / "r18_timm.pth"), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            reference.eval().forward_features(x), method.export_encoder().eval()(x), atol=1e-5
        )

    vit = ["model.arch=vit_tiny", "model.img_size=32", "model.num_heads=3", "method.queue_size=16"]
    method = densessl_checkpoint(tmp_path / "v.pt", "quick/mocov2_synthetic.yaml", vit)
    info = export(tmp_path / "v.pt", tmp_path / "vit.pth", to="vit")
    assert info["model"]["arch"] == "vit_tiny" and info["model"]["num_heads"] == 3
    reference = VisionTransformer(img_size=32, embed_dim=192, depth=12, num_heads=3, num_classes=0)
    reference.load_state_dict(torch.load(tmp_path / "vit.pth"), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            reference.eval().forward_features(x), method.export_encoder().eval().tokens(x), atol=1e-5
        )


def test_detectron2_mm_and_safetensors_files_read_back_to_the_same_weights(tmp_path):
    method = densessl_checkpoint(tmp_path / "ckpt.pt", "quick/mocov2_synthetic.yaml", MOCO_R18)
    original = method.export_encoder().state_dict()

    export(tmp_path / "ckpt.pt", tmp_path / "d2.pkl", to="detectron2")
    with open(tmp_path / "d2.pkl", "rb") as f:
        d2 = pickle.load(f)
    assert set(d2) == {"model", "__author__", "matching_heuristics"} and d2["matching_heuristics"] is True
    assert all(isinstance(v, np.ndarray) for v in d2["model"].values())
    assert np.array_equal(d2["model"]["stem.conv1.norm.running_mean"], original["bn1.running_mean"].numpy())

    export(tmp_path / "ckpt.pt", tmp_path / "mm.pth", to="mmseg")
    assert set(torch.load(tmp_path / "mm.pth")) == {"state_dict"}
    export(tmp_path / "ckpt.pt", tmp_path / "b.safetensors", to="safetensors")

    for name in ("d2.pkl", "mm.pth", "b.safetensors"):
        contents = read_checkpoint(tmp_path / name)
        _, state = contents.encoder()
        for key, value in state.items():
            assert torch.equal(value, original[key]), (name, key)
        assert contents.model["arch"] == "resnet18"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            load_backbone(tmp_path / "d2.pkl")(x), method.export_encoder().eval()(x), atol=1e-5
        )


def test_slotcon_exports_its_teacher_unless_told_otherwise(tmp_path):
    overrides = ["model.width=0.125", "method.num_prototypes=8", "method.hidden_dim=16"]
    method = densessl_checkpoint(tmp_path / "s.pt", "quick/slotcon_synthetic.yaml", overrides)
    info = export(tmp_path / "s.pt", tmp_path / "t.pth")
    assert info["encoder"] == "teacher"
    export(tmp_path / "s.pt", tmp_path / "q.pth", encoder="query")
    teacher, query = torch.load(tmp_path / "t.pth"), torch.load(tmp_path / "q.pth")
    assert torch.equal(teacher["conv1.weight"], method.encoder_k.conv1.weight)
    assert torch.equal(query["conv1.weight"], method.encoder_q.conv1.weight)
    assert not torch.equal(teacher["conv1.weight"], query["conv1.weight"])
    with pytest.raises(CheckpointError, match="holds no 'student' encoder; it holds: query, teacher"):
        export(tmp_path / "s.pt", tmp_path / "x.pth", encoder="student")


def test_the_output_suffix_must_fit_the_format(tmp_path):
    densessl_checkpoint(tmp_path / "c.pt", "quick/mocov2_synthetic.yaml", MOCO_R18)
    with pytest.raises(Exception, match=r"should end in \.pkl"):
        export(tmp_path / "c.pt", tmp_path / "d2.pth", to="detectron2")
    assert not (tmp_path / "d2.pth").exists()


# --- reference layouts ---------------------------------------------------------------------------


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


# --- non-standard architectures -------------------------------------------------------------------

QUICK_R18 = ["method.queue_size=16"]  # the quick recipe's small-input, quarter-width ResNet-18


def test_exporting_the_quick_backbone_warns_with_a_constructor_that_loads_it(tmp_path, caplog):
    method = densessl_checkpoint(tmp_path / "q.pt", "quick/mocov2_synthetic.yaml", QUICK_R18)
    with caplog.at_level("WARNING", logger="densessl.export"):
        info = export(tmp_path / "q.pt", tmp_path / "q.pth", to="torchvision")
    expected = "densessl.models.backbones.ResNetBackbone('resnet18', small_input=True, width=0.25)"
    assert info["standard_architecture"] is False and info["load_with"] == expected
    assert json.loads((tmp_path / "q.pth.json").read_text())["standard_architecture"] is False
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "not torchvision's standard resnet18" in warning and expected in warning
    # the README's snippet does not load it; the construction the warning names does
    reference = torchvision.models.resnet18()
    reference.fc = nn.Identity()
    with pytest.raises(RuntimeError):
        reference.load_state_dict(torch.load(tmp_path / "q.pth"), strict=True)
    from densessl.models.backbones import ResNetBackbone

    backbone = ResNetBackbone("resnet18", small_input=True, width=0.25).eval()
    backbone.load_state_dict(torch.load(tmp_path / "q.pth"), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(x), method.export_encoder().eval()(x), atol=1e-5)


def test_a_detectron2_export_of_the_quick_backbone_says_no_config_builds_it(tmp_path, caplog):
    densessl_checkpoint(tmp_path / "q.pt", "quick/mocov2_synthetic.yaml", QUICK_R18)
    with caplog.at_level("WARNING", logger="densessl.export"):
        info = export(tmp_path / "q.pt", tmp_path / "q.pkl", to="detectron2")
    assert info["standard_architecture"] is False
    assert "no detectron2 ResNet config builds it" in info["load_with"]
    assert "--to torchvision" in info["load_with"] and "ResNetBackbone('resnet18'" in info["load_with"]
    assert any("not detectron2's standard resnet18" in r.getMessage() for r in caplog.records)


def test_a_small_stem_at_full_width_loads_into_the_torchvision_construction_the_warning_names(tmp_path):
    overrides = ["model.width=1.0", "method.queue_size=16"]
    method = densessl_checkpoint(tmp_path / "s.pt", "quick/mocov2_synthetic.yaml", overrides)
    info = export(tmp_path / "s.pt", tmp_path / "s.pth", to="torchvision")
    assert info["standard_architecture"] is False
    assert "model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)" in info["load_with"]
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load(tmp_path / "s.pth"), strict=True)
    trunk = nn.Sequential(*list(model.children())[:-2]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trunk(x), method.export_encoder().eval()(x), atol=1e-5)


def test_a_standard_backbone_exports_without_a_warning(tmp_path, caplog):
    densessl_checkpoint(tmp_path / "r.pt", "quick/mocov2_synthetic.yaml", MOCO_R18)
    with caplog.at_level("WARNING", logger="densessl.export"):
        info = export(tmp_path / "r.pt", tmp_path / "r.pkl", to="detectron2")
    assert info["standard_architecture"] is True and "load_with" not in info
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("mmseg", "dict(type='ResNet', depth=50, stem_channels=32, base_channels=32)"),
        ("detectron2", "MODEL.RESNETS.STEM_OUT_CHANNELS 32 MODEL.RESNETS.RES2_OUT_CHANNELS 128"),
        ("torchvision", "densessl.models.backbones.ResNetBackbone('resnet50', width=0.5)"),
    ],
)
def test_a_half_width_resnet50_gets_each_frameworks_width_settings(fmt, expected):
    from densessl.export import architecture_check

    standard, load_with = architecture_check({"arch": "resnet50", "small_input": False, "width": 0.5}, fmt)
    assert standard is False and expected in load_with


def test_a_vit_at_another_resolution_is_not_timms_standard():
    from densessl.export import architecture_check

    assert architecture_check({**VIT_S, "num_heads": None}, "timm") == (True, None)
    standard, load_with = architecture_check({**VIT_S, "img_size": 96, "num_heads": None}, "timm")
    assert not standard and "VisionTransformer(img_size=96, patch_size=16, embed_dim=384" in load_with
    # MGC's ViT-S has 8 heads: same weights as timm's 6-head model, another network
    assert architecture_check(VIT_S, "timm")[0] is False and architecture_check(VIT_S, "vit")[0] is True

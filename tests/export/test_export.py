"""Exporting densessl checkpoints: round trips per target, the encoder chosen, the output suffix, and
the warnings for backbones that are not the target's standard network."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from densessl.export import export, load_backbone, read_checkpoint
from densessl.training.checkpoint import CheckpointError
from tests.export.helpers import MOCO_R18, MOCO_VIT, TINY_VIT, VIT_S, densessl_checkpoint

# --- densessl checkpoints and round trips --------------------------------------------------------


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


def detectron2_norm_name(module: str) -> str:
    """detectron2's name of a torchvision ResNet batch norm, spelled out from its ResNet
    (stem.conv1, res2..res5 for layer1..layer4, convK.norm for bnK, shortcut for downsample)."""
    if module == "bn1":
        return "stem.conv1.norm"
    stage, block, rest = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", module).groups()
    prefix = f"res{int(stage) + 1}.{block}"
    if rest == "downsample.1":
        return f"{prefix}.shortcut.norm"
    return f"{prefix}.conv{rest.removeprefix('bn')}.norm"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_detectron2_export_puts_every_batch_norms_statistics_under_its_own_name(tmp_path, arch):
    norms: dict[str, nn.BatchNorm2d] = {}

    def trained_statistics(method: nn.Module) -> None:
        # distinct everywhere: integer part = (layer, tensor), fraction = channel, so a value
        # found under the wrong name or channel cannot match by accident
        modules = method.export_encoder().named_modules()
        norms.update((n, m) for n, m in modules if isinstance(m, nn.BatchNorm2d))
        for j, bn in enumerate(norms.values()):
            channel = torch.arange(bn.num_features) / (2 * bn.num_features)
            for t, tensor in enumerate((bn.weight, bn.bias, bn.running_mean, bn.running_var)):
                tensor.copy_(4 * j + t + 1 + channel)

    overrides = [f"model.arch={arch}", "model.small_input=false", "model.width=0.25", "method.queue_size=16"]
    densessl_checkpoint(tmp_path / "ckpt.pt", "quick/mocov2_synthetic.yaml", overrides, trained_statistics)
    export(tmp_path / "ckpt.pt", tmp_path / "d2.pkl", to="detectron2")
    with open(tmp_path / "d2.pkl", "rb") as f:
        d2 = pickle.load(f)["model"]

    expected = {detectron2_norm_name(name) for name in norms}
    assert {k.rsplit(".", 1)[0] for k in d2 if ".norm." in k} == expected
    params = ("weight", "bias", "running_mean", "running_var")
    for name, bn in norms.items():
        target = detectron2_norm_name(name)
        for p in params:
            assert np.array_equal(d2[f"{target}.{p}"], getattr(bn, p).detach().numpy()), f"{name}.{p}"
        # detectron2's FrozenBatchNorm2d keeps the four tensors as they are and computes
        # F.batch_norm(x, running_mean, running_var, weight, bias, training=False, eps=1e-5)
        # (detectron2/layers/batch_norm.py): the file must hold raw statistics, not folded ones,
        # and the backbone's eps must be detectron2's
        x = torch.randn(2, bn.num_features, 3, 3)
        weight, bias, mean, var = (torch.from_numpy(d2[f"{target}.{p}"]) for p in params)
        frozen = F.batch_norm(x, mean, var, weight, bias, training=False, eps=1e-5)
        torch.testing.assert_close(frozen, bn.eval()(x), rtol=1e-6, atol=1e-6)


# --- ViT checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("vit", ".pth"), ("timm", ".pth"), ("safetensors", ".safetensors")]
)
def test_a_densessl_vit_exports_the_encoder_asked_for_with_timms_bare_keys(tmp_path, fmt, suffix):
    method = densessl_checkpoint(tmp_path / "v.pt", "quick/mocov2_synthetic.yaml", MOCO_VIT)
    expected = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=0
    )
    for role in ("query", "teacher"):
        out = tmp_path / f"{role}{suffix}"
        info = export(tmp_path / "v.pt", out, to=fmt, encoder=role)
        assert info["encoder"] == role and info["model"] == TINY_VIT
        state = load_file(out) if suffix == ".safetensors" else torch.load(out)
        assert set(state) == set(expected.state_dict())
        mine = method.encoder(role).state_dict()
        assert all(torch.equal(value, mine[key]) for key, value in state.items()), role
        x = torch.randn(2, 3, 40, 24)  # another grid than the position table's 4x4
        with torch.no_grad():
            assert torch.allclose(load_backbone(out)(x), method.encoder(role).eval()(x), atol=1e-5)
    query, teacher = (load_backbone(tmp_path / f"{r}{suffix}").state_dict() for r in ("query", "teacher"))
    assert not torch.equal(query["blocks.0.attn.qkv.weight"], teacher["blocks.0.attn.qkv.weight"])

"""Export formats: exactly the target key sets, detectron2's names, refusals of the wrong family or keys."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from densessl.config import ModelConfig
from densessl.export.formats import (
    FORMATS,
    convert,
    detectron2_keys,
    key_mismatch,
    to_detectron2_name,
    torchvision_keys,
)
from densessl.training.checkpoint import CheckpointError
from tests.export.helpers import RESNET18, RESNET50, VIT_S, state_of


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

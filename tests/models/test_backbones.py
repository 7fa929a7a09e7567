"""Backbones keep torchvision's names and give the promised map sizes; teacher momentum schedules."""

from __future__ import annotations

import pytest
import torch
import torchvision

from densessl.models.backbones import build_backbone
from densessl.models.momentum import momentum_at


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet101"])
def test_state_dict_is_torchvision_minus_fc(arch):
    ours = set(build_backbone(arch).state_dict())
    theirs = {k for k in getattr(torchvision.models, arch)().state_dict() if not k.startswith("fc.")}
    assert ours == theirs


def test_dense_map_and_pooled_vector_shapes():
    x = torch.randn(2, 3, 64, 64)
    small = build_backbone("resnet18", small_input=True, width=0.25).eval()
    dense, pooled = small.forward_pooled(x)
    assert dense.shape == (2, 128, 8, 8) and pooled.shape == (2, 128)
    assert torch.allclose(pooled, dense.mean(dim=(2, 3)), atol=1e-6)
    plain = build_backbone("resnet18").eval()
    assert plain(torch.randn(1, 3, 224, 224)).shape == (1, 512, 7, 7)
    assert build_backbone("resnet50", small_input=True).out_channels == 2048


def test_width_scales_channels_but_keeps_names():
    half = build_backbone("resnet18", width=0.5)
    assert half.layer1[0].conv1.weight.shape[0] == 32 and half.out_channels == 256
    assert set(half.state_dict()) == set(build_backbone("resnet18").state_dict())


def test_momentum_schedules():
    assert momentum_at("constant", 0.999, 50, 100) == 0.999
    assert momentum_at("cosine", 0.99, 0, 100) == pytest.approx(0.99)
    assert momentum_at("cosine", 0.99, 50, 100) == pytest.approx(0.995)
    assert momentum_at("cosine", 0.99, 100, 100) == pytest.approx(1.0)

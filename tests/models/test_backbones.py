"""Backbones keep torchvision's names and give the promised map sizes."""

from __future__ import annotations

import pytest
import torch
import torchvision

from densessl.config import ModelConfig
from densessl.models.backbones import ResNetBackbone, backbone_from_config, build_backbone
from densessl.models.vit import ViTBackbone


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


def test_one_builder_for_both_families_ignoring_the_other_familys_arguments():
    vit = build_backbone("vit_tiny", patch_size=8, img_size=32, num_heads=4, small_input=True, width=0.5)
    assert isinstance(vit, ViTBackbone)
    assert (vit.patch_size, vit.num_heads, vit.out_channels) == (8, 4, 192)
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 192, 4, 4)
    resnet = build_backbone("resnet18", small_input=True, width=0.25, patch_size=8, drop_path_rate=0.3)
    assert isinstance(resnet, ResNetBackbone)
    assert resnet.out_channels == 128 and isinstance(resnet.maxpool, torch.nn.Identity)
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet9'.*resnet18.*vit_small"):
        build_backbone("resnet9")


def test_model_config_adapter_gives_every_builder_argument():
    import inspect

    assert set(ModelConfig().backbone_kwargs()) == set(inspect.signature(build_backbone).parameters)
    with pytest.raises(TypeError, match="not a model field: layers"):
        ModelConfig().backbone_kwargs(layers=3)


def test_the_builder_passes_every_argument_on():
    # same seed, same weights as the classes built directly: nothing dropped or defaulted on the way
    model = ModelConfig(
        arch="resnet18", small_input=True, width=0.25, zero_init_residual=True, conv_init="orthogonal"
    )
    torch.manual_seed(0)
    built = build_backbone(**model.backbone_kwargs())
    torch.manual_seed(0)
    direct = ResNetBackbone(
        "resnet18", small_input=True, width=0.25, zero_init_residual=True, conv_init="orthogonal"
    )
    torch.manual_seed(0)
    shim = backbone_from_config(model)
    for other in (direct, shim):
        assert all(torch.equal(v, other.state_dict()[k]) for k, v in built.state_dict().items())
    assert not built.layer1[0].bn2.weight.any()  # zero_init_residual reached torchvision
    stem = built.conv1.weight.flatten(1)
    assert torch.allclose(stem @ stem.t(), 2.0 * torch.eye(16), atol=1e-5)  # conv_init reached it

    vit = ModelConfig(arch="vit_tiny", patch_size=8, img_size=32, num_heads=4, drop_path_rate=0.2)
    torch.manual_seed(0)
    built = build_backbone(**vit.backbone_kwargs())
    torch.manual_seed(0)
    direct = ViTBackbone("vit_tiny", patch_size=8, img_size=32, num_heads=4, drop_path_rate=0.2)
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in built.state_dict().items())
    assert built.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)


def _gram(conv: torch.nn.Conv2d) -> torch.Tensor:
    """The Gram matrix of a layer's filters, or of its input weights where it has more filters."""
    w = conv.weight.detach().flatten(1)
    return w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_orthogonal_init_draws_an_orthonormal_set_per_convolution(arch):
    torch.manual_seed(0)
    net = build_backbone(arch, small_input=True, width=0.25, conv_init="orthogonal")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == (20 if arch == "resnet18" else 53)
    for conv in convs:  # each filter (or input column) of norm sqrt(2), the ReLU gain, at right angles
        gram = _gram(conv)
        assert torch.allclose(gram, 2.0 * torch.eye(len(gram)), atol=1e-4)
    # torchvision's Gaussian filters are not: the 16 stem filters of 27 weights lean on each other
    torch.manual_seed(0)
    stem = _gram(build_backbone(arch, small_input=True, width=0.25).conv1)
    assert (stem - torch.diag(stem.diag())).abs().max() > 0.1 * stem.diag().mean()
    # batch norm is left as torchvision sets it, and a seed still fixes every weight
    assert torch.equal(net.bn1.weight, torch.ones(16)) and not net.bn1.bias.any()
    torch.manual_seed(0)
    again = build_backbone(arch, small_input=True, width=0.25, conv_init="orthogonal")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match=r"unknown conv_init 'xavier'.*kaiming.*orthogonal"):
        build_backbone(arch, conv_init="xavier")


def test_overrides_build_a_teacher_with_other_arguments():
    model = ModelConfig(arch="vit_tiny", patch_size=8, img_size=32, drop_path_rate=0.2)
    torch.manual_seed(0)
    student = build_backbone(**model.backbone_kwargs())
    torch.manual_seed(0)
    teacher = build_backbone(**model.backbone_kwargs(drop_path_rate=0.0))
    assert model.drop_path_rate == 0.2  # the recipe's section is not changed by an override
    assert student.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert isinstance(teacher.blocks[-1].drop_path1, torch.nn.Identity)
    # drop path holds no weights: the teacher can be loaded from the student as it is
    teacher.load_state_dict(student.state_dict())

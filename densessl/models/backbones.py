"""ResNet backbones that return the last dense map, with torchvision parameter names.

A backbone *is* a torchvision ``ResNet`` without its classifier: its ``state_dict`` keys are
exactly torchvision's (``conv1``, ``bn1``, ``layerX.Y.convZ``, ``downsample.0/1``) minus ``fc``,
so exporting it needs no renaming. Two additions serve small images:

- ``small_input``: a 3x3 stride-1 stem and no max-pool, so the output stride is 8 instead of 32
  (a 64 px image gives an 8x8 map);
- ``width``: a multiplier on every stage's channel count (0.5 gives 32/64/128/256 for
  ResNet-18), for CPU-sized experiments. Parameter names stay torchvision's; only shapes change.

``conv_init="orthogonal"`` draws every convolution's filters as an orthonormal set (rows of the
flattened ``(out, in * k * k)`` weight, or its columns where the layer has more filters than inputs)
instead of torchvision's independent Gaussian filters. Behind batch norm only the filters'
directions matter: orthonormal ones start each layer with as many distinct directions as it has
filters, where a narrow layer's Gaussian ones overlap (the 16 stem filters of 27 weights of a
quarter-width ResNet-18 meet at cosines up to 0.4-0.7). The revisited MoCo's quick recipe uses it.

:func:`build_backbone` builds any backbone (ResNet or ViT) from plain keyword arguments; the
configuration layer turns its ``model`` section into them
(:meth:`densessl.config.ModelConfig.backbone_kwargs`), so no model imports the configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

if TYPE_CHECKING:
    from densessl.models.vit import ViTBackbone

#: how a ResNet's convolutions are drawn: torchvision's Kaiming normal (fan-out) or orthonormal filters
CONV_INITS = ("kaiming", "orthogonal")

ARCHITECTURES: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (tv_resnet.Bottleneck, [3, 4, 23, 3]),
}


class ResNetBackbone(tv_resnet.ResNet):
    """torchvision ResNet returning the res5 map; ``forward_pooled`` also gives the pooled vector."""

    def __init__(
        self,
        arch: str = "resnet50",
        *,
        small_input: bool = False,
        width: float = 1.0,
        zero_init_residual: bool = False,
        conv_init: str = "kaiming",
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown backbone '{arch}'; choose one of {sorted(ARCHITECTURES)}")
        if width <= 0:
            raise ValueError(f"backbone width must be positive, got {width}")
        if conv_init not in CONV_INITS:
            raise ValueError(f"unknown conv_init '{conv_init}'; choose one of {list(CONV_INITS)}")
        block, layers = ARCHITECTURES[arch]
        self._width = width
        super().__init__(block, layers, zero_init_residual=zero_init_residual, norm_layer=norm_layer)
        stem = self._scaled(64)
        if small_input or stem != 64:
            kernel, stride, padding = (3, 1, 1) if small_input else (7, 2, 3)
            self.conv1 = nn.Conv2d(3, stem, kernel, stride=stride, padding=padding, bias=False)
            self.bn1 = self._norm_layer(stem)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if small_input:
            self.maxpool = nn.Identity()
        if conv_init == "orthogonal":
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.orthogonal_(module.weight, gain=nn.init.calculate_gain("relu"))
        del self.fc
        self.arch = arch
        self.small_input = small_input
        self.out_channels = self._scaled(512) * block.expansion

    def _scaled(self, planes: int) -> int:
        return max(1, int(round(planes * self._width)))

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # type: ignore[override]
        # torchvision builds the stages with fixed widths 64..512; scaling here keeps its names.
        if planes == 64 and self.inplanes == 64:
            self.inplanes = self._scaled(64)
        return super()._make_layer(block, self._scaled(planes), blocks, stride, dilate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Return the last dense map (B, C, H/stride, W/stride)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_pooled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the dense map and its global average (B, C)."""
        dense = self(x)  # through __call__, so that forward hooks (the collapse monitor's) see it
        return dense, torch.flatten(self.avgpool(dense), 1)


#: every backbone a method can be built on: a dense map from ``forward``, ``out_channels``
Backbone: TypeAlias = "ResNetBackbone | ViTBackbone"


def build_backbone(
    arch: str = "resnet50",
    *,
    small_input: bool = False,
    width: float = 1.0,
    zero_init_residual: bool = False,
    conv_init: str = "kaiming",
    patch_size: int = 16,
    img_size: int = 224,
    num_heads: int | None = None,
    drop_path_rate: float = 0.0,
    depth: int | None = None,
) -> Backbone:
    """Build a backbone by name: a ResNet (:data:`ARCHITECTURES`) or a ViT
    (:data:`~densessl.models.vit.VIT_ARCHITECTURES`).

    ``small_input``, ``width``, ``zero_init_residual`` and ``conv_init`` shape a ResNet; ``patch_size``,
    ``img_size``, ``num_heads``, ``drop_path_rate`` and ``depth`` a ViT. The other family's arguments are
    ignored, so one set of arguments (a recipe's ``model`` section) describes either, and an
    override such as ``drop_path_rate=0.0`` for a momentum teacher applies to both.
    """
    if arch in ARCHITECTURES:
        return ResNetBackbone(
            arch,
            small_input=small_input,
            width=width,
            zero_init_residual=zero_init_residual,
            conv_init=conv_init,
        )
    # timm is imported only for a ViT
    from densessl.models.vit import VIT_ARCHITECTURES, ViTBackbone

    if arch not in VIT_ARCHITECTURES:
        known = sorted(ARCHITECTURES) + sorted(VIT_ARCHITECTURES)
        raise ValueError(f"unknown backbone '{arch}'; choose one of {known}")
    return ViTBackbone(
        arch,
        patch_size=patch_size,
        img_size=img_size,
        num_heads=num_heads,
        drop_path_rate=drop_path_rate,
        depth=depth,
    )


def backbone_from_config(model: Any) -> Backbone:
    """The backbone a :class:`~densessl.config.ModelConfig` describes; kept for callers, new code
    calls ``build_backbone(**model.backbone_kwargs())``."""
    return build_backbone(**model.backbone_kwargs())


def describe_backbone(backbone: nn.Module) -> dict[str, Any]:
    """The :class:`~densessl.config.ModelConfig` fields that rebuild ``backbone`` (for sidecars)."""
    from densessl.models.vit import ViTBackbone

    if isinstance(backbone, ViTBackbone):
        return {
            "arch": backbone.arch,
            "patch_size": backbone.patch_size,
            "img_size": int(backbone.patch_embed.img_size[0]),
            "num_heads": backbone.num_heads,
            "depth": len(backbone.blocks),
        }
    if isinstance(backbone, ResNetBackbone):
        return {"arch": backbone.arch, "small_input": backbone.small_input, "width": backbone._width}
    raise TypeError(f"not a densessl backbone: {type(backbone).__name__}")

"""Projection and prediction heads shared by all methods.

One builder covers every head in the references: MoCo-v2 / DenseCL (Linear-ReLU-Linear with
bias, no BN), SlotCon (BN + GELU, 3 layers, 1x1 convs for dense maps) and MGC (no bias, BN +
ReLU, a final affine-free BN). The layout is a plain ``nn.Sequential`` so that parameter names
follow the references' ``mlp.{0,1,3,4,6}`` numbering.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "gelu"]
LastNorm = Literal["none", "bn", "bn_noaffine"]


def build_mlp(
    dims: list[int],
    *,
    norm: bool = False,
    activation: Activation = "relu",
    bias: bool = True,
    last_norm: LastNorm = "none",
    spatial: bool = False,
) -> nn.Sequential:
    """Layers ``dims[0] -> dims[1] -> ... -> dims[-1]``; hidden layers get [BN] + activation.

    ``spatial=True`` uses 1x1 convolutions and BatchNorm2d, for dense (B, C, H, W) maps.
    """
    if len(dims) < 2:
        raise ValueError("an MLP needs at least an input and an output size")
    linear = (lambda i, o: nn.Conv2d(i, o, 1, bias=bias)) if spatial else (lambda i, o: nn.Linear(i, o, bias))
    batch_norm = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    act = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}[activation]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(linear(d_in, d_out))
        if i < len(dims) - 2:
            if norm:
                layers.append(batch_norm(d_out))
            layers.append(act())
    if last_norm != "none":
        layers.append(batch_norm(dims[-1], affine=last_norm == "bn"))
    return nn.Sequential(*layers)


def trunc_normal_init(
    module: nn.Module, layers: tuple[type[nn.Module], ...] = (nn.Linear,), std: float = 0.02
) -> None:
    """Every ``layers`` module inside ``module``: weights from a normal truncated at +-2 (the
    ViT / DINO initialisation, used by SlotCon's heads and MGC), biases zero."""
    for layer in module.modules():
        if isinstance(layer, layers):
            nn.init.trunc_normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class GlobalHead(nn.Module):
    """Global average pool of a dense map followed by an MLP (MoCo-v2's ``fc`` head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, kaiming_init: bool = False) -> None:
        super().__init__()
        self.mlp = build_mlp([in_dim, hidden_dim, out_dim])
        if kaiming_init:  # DenseCL's neck: Kaiming-normal (fan_in, ReLU) Linear weights, zero bias
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                    nn.init.zeros_(layer.bias)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.mlp(dense.mean(dim=(2, 3)))


class DenseHead(nn.Module):
    """1x1-conv MLP applied at every location of a dense map (DenseCL's dense projection)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = build_mlp([in_dim, hidden_dim, out_dim], spatial=True)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.mlp(dense)

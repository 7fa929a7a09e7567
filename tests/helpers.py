"""Small models and data shared by the tests."""

from __future__ import annotations

import torch
from torch import nn

from densessl.methods import Views


class TinyBackbone(nn.Module):
    """A BN-free conv net with the backbone contract (dense map out, ``out_channels``).

    Without batch norm every sample is encoded independently, so results do not depend on how a
    batch is split across processes: the property the distributed-equivalence tests need.
    """

    def __init__(self, out_channels: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, out_channels, 3, padding=1)
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_factory(seed: int = 0):
    def factory() -> TinyBackbone:
        torch.manual_seed(seed)
        return TinyBackbone()

    return factory


def random_views(batch: int, size: int = 8, seed: int = 0, num_views: int = 2) -> Views:
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(batch, 3, size, size, generator=g) for _ in range(num_views)]
    return Views(
        images=images,
        boxes=torch.zeros(batch, num_views, 4, dtype=torch.long),
        flips=torch.zeros(batch, num_views, dtype=torch.bool),
        image_sizes=torch.full((batch, 2), size),
    )

"""MoCo-v2 (Chen et al., 2020): momentum contrast with an MLP head and a queue of negatives.

The query encoder (backbone + Linear-ReLU-Linear head on the pooled res5 vector) sees view 0,
the momentum key encoder sees view 1 (with shuffle-BN). The loss is InfoNCE between each query
and its key against the queue, at temperature 0.2; it is not symmetrised. After the loss, the
keys of the whole global batch enter the queue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densessl.distributed import all_gather, shuffle_bn_forward
from densessl.methods.base import BackboneFactory, Method, Step, Views, register
from densessl.methods.configs import MoCoV2Config
from densessl.models.backbones import Backbone
from densessl.models.heads import GlobalHead
from densessl.models.infonce import queue_infonce
from densessl.models.momentum import MomentumSchedule, ema_update, momentum_copy
from densessl.models.queue import NegativeQueue


class Encoder(nn.Module):
    """Backbone plus global projection head; returns the dense map and the projection."""

    def __init__(self, backbone: Backbone, hidden_dim: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = GlobalHead(backbone.out_channels, hidden_dim, dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dense = self.backbone(images)
        return dense, self.head(dense)

    def forward_pooled(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's pooled feature (B, C) and the projection of it (B, dim)."""
        _, pooled = self.backbone.forward_pooled(images)
        return pooled, self.head.mlp(pooled)


@register
class MoCoV2(Method):
    name = "mocov2"
    config_class = MoCoV2Config

    def __init__(self, config: MoCoV2Config, backbone_factory: BackboneFactory) -> None:
        super().__init__()
        self.config = config
        self.encoder_q = Encoder(backbone_factory(), config.hidden_dim, config.dim)
        self.encoder_k = momentum_copy(self.encoder_q)
        self.queue = NegativeQueue(config.dim, config.queue_size)

    def teacher_momentum(self) -> MomentumSchedule:
        return MomentumSchedule(self.config.momentum_schedule, self.config.momentum)

    def forward(self, views: Views, step: Step) -> dict[str, torch.Tensor]:
        cfg = self.config
        _, q = self.encoder_q(views.images[0])
        q = F.normalize(q, dim=1)
        with torch.no_grad():
            m = self.momentum_for(step)
            ema_update(self.encoder_k, self.encoder_q, m)
            _, k = shuffle_bn_forward(self.encoder_k, views.images[1], step.generator, cfg.shuffle_bn_groups)
            k = F.normalize(k.float(), dim=1)
        loss = queue_infonce(q, k, self.queue.keys, cfg.temperature)
        self.queue.push(all_gather(k))
        return {"loss": loss, "momentum": torch.tensor(m)}

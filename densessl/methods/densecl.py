"""DenseCL (Wang et al., 2021): dense contrastive learning on top of MoCo-v2.

Each encoder carries two heads on the res5 map: MoCo-v2's global head, and a dense head (1x1
conv MLP) that projects every location. For each query location, the positive key location is
the argmax of the cosine similarity between the two views' *backbone* features (no gradient
through the choice); the dense loss is InfoNCE between the *projected* query vector and the
projected key vector at that location, against a second queue that holds one pooled dense key
per image. Total loss: (1 - lambda) * global + lambda * dense, lambda = 0.5, T = 0.2 for both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densessl.distributed import all_gather, shuffle_bn_forward
from densessl.methods.base import BackboneFactory, Method, Step, Views, register
from densessl.methods.configs import DenseCLConfig
from densessl.models.backbones import Backbone
from densessl.models.heads import DenseHead, GlobalHead
from densessl.models.infonce import queue_infonce
from densessl.models.momentum import MomentumSchedule, ema_update, momentum_copy
from densessl.models.queue import NegativeQueue


class DenseEncoder(nn.Module):
    """Backbone with DenseCL's neck: global projection, dense projection, pooled dense vector."""

    def __init__(self, backbone: Backbone, hidden_dim: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.global_head = GlobalHead(backbone.out_channels, hidden_dim, dim, kaiming_init=True)
        self.dense_head = DenseHead(backbone.out_channels, hidden_dim, dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the backbone map (B, C, H, W), the global projection (B, D) and the dense
        projections flattened to (B, D, H*W)."""
        features = self.backbone(images)
        dense = self.dense_head(features).flatten(2)
        return features, self.global_head(features), dense


def match_locations(query_features: torch.Tensor, key_features: torch.Tensor) -> torch.Tensor:
    """For each query location, the index of the most similar key location.

    Both inputs are backbone maps (B, C, H, W); similarity is the cosine between the channel
    vectors. Returns (B, H*W) long indices into the key's flattened locations.
    """
    q = F.normalize(query_features.flatten(2), dim=1)
    k = F.normalize(key_features.flatten(2), dim=1)
    similarity = torch.einsum("bcs,bct->bst", q, k)
    return similarity.argmax(dim=2)


def dense_infonce(
    query_dense: torch.Tensor,
    key_dense: torch.Tensor,
    matches: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """DenseCL's dense term: (B, D, S) query and key projections, (B, S) matched key indices.

    Every query location is a row of one InfoNCE (B * S rows) against the dense queue, the
    largest loss of the MoCo family: the fused, chunked :func:`queue_infonce` never holds its
    (B * S, K) logits."""
    q = F.normalize(query_dense, dim=1).transpose(1, 2).reshape(-1, query_dense.shape[1])
    k = F.normalize(key_dense, dim=1)
    k = torch.gather(k, 2, matches.unsqueeze(1).expand(-1, k.shape[1], -1))
    k = k.transpose(1, 2).reshape(-1, key_dense.shape[1])
    return queue_infonce(q, k, negatives, temperature)


@register
class DenseCL(Method):
    name = "densecl"
    config_class = DenseCLConfig

    def __init__(self, config: DenseCLConfig, backbone_factory: BackboneFactory) -> None:
        super().__init__()
        self.config = config
        self.encoder_q = DenseEncoder(backbone_factory(), config.hidden_dim, config.dim)
        self.encoder_k = momentum_copy(self.encoder_q)
        self.queue = NegativeQueue(config.dim, config.queue_size)
        self.dense_queue = NegativeQueue(config.dim, config.queue_size)

    def teacher_momentum(self) -> MomentumSchedule:
        return MomentumSchedule(self.config.momentum_schedule, self.config.momentum)

    def forward(self, views: Views, step: Step) -> dict[str, torch.Tensor]:
        cfg = self.config
        q_features, q_global, q_dense = self.encoder_q(views.images[0])
        q_global = F.normalize(q_global, dim=1)
        with torch.no_grad():
            m = self.momentum_for(step)
            ema_update(self.encoder_k, self.encoder_q, m)
            k_features, k_global, k_dense = shuffle_bn_forward(
                self.encoder_k, views.images[1], step.generator, cfg.shuffle_bn_groups
            )
            k_global = F.normalize(k_global.float(), dim=1)
            k_pooled = F.normalize(k_dense.float().mean(dim=2), dim=1)
            matches = match_locations(q_features.detach().float(), k_features.float())
        loss_global = queue_infonce(q_global, k_global, self.queue.keys, cfg.temperature)
        loss_dense = dense_infonce(q_dense, k_dense.float(), matches, self.dense_queue.keys, cfg.temperature)
        loss = (1.0 - cfg.loss_lambda) * loss_global + cfg.loss_lambda * loss_dense
        self.queue.push(all_gather(k_global))
        self.dense_queue.push(all_gather(k_pooled))
        return {
            "loss": loss,
            "loss_global": loss_global.detach(),
            "loss_dense": loss_dense.detach(),
            "momentum": torch.tensor(m),
        }

"""Revisited MoCo (Van Gansbeke et al., 2021, "Revisiting Contrastive Methods for Unsupervised
Learning of Visual Representations"): MoCo-v2 with constrained multi-crop and a nearest-neighbour
loss.

Views, in recipe order: a large query crop, a large key crop, then small crops drawn to overlap
the key crop (the recipe's ``reference``, checked by :attr:`RevisitedMoCo.view_roles`). The query
encoder sees the large query, then all small crops as one separate batch (their own batch-norm
statistics), image-major (image 0's small crops, then image 1's...). Every query row (the large
one and each small one) has the key of its own image as its positive:

- MoCo term: InfoNCE of the 5 query rows of each image against the key and the queue, T 0.2,
  mean over all rows;
- nearest-neighbour term: the 20 queued keys whose *backbone* features (pooled, normalised, kept
  in a second queue written at the same slots) are closest to each query's backbone feature
  count as positives of its *projection*: ``-mean_j log softmax(q . queue / T)_j`` over those
  20, the softmax running over the queue only (the current key is not in the denominator);
- total: MoCo + 0.4 x neighbours.

Enqueue order. The repository's main script pushes the current keys into both queues after the
negative logits are computed but before the neighbour search (``enqueue_order: released``): the
search sees the fresh keys (an image's own key is typically its top neighbour) while the logits it
indexes are those of the entries the slots held before. ``consistent`` searches first and pushes
afterwards, as the repository's warm-up script does; ``knn_warmup_epochs`` trains with the MoCo
term alone for the first epochs. In the released order the share of neighbours found in the slots
just written is logged (``knn_fresh_share``): it grows with the batch's share of the queue and with
fewer neighbours, so a small queue or a small top-k leaves more of the term to those older keys.

The backbone queue (2048 x 65536 fp32 for a ResNet-50: 512 MiB) is kept in ``last.pt`` for exact
resume and left out of epoch copies (:attr:`light_state_exclude`); exports never carry it. The
query encoder is exported (spec 6.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from densessl.distributed import all_gather, shuffle_bn_forward
from densessl.methods.base import BackboneFactory, Method, Step, ViewRole, Views, register
from densessl.methods.configs import RevisitedMoCoConfig
from densessl.methods.mocov2 import Encoder
from densessl.models.infonce import queue_infonce, queue_infonce_and_neighbours
from densessl.models.momentum import MomentumSchedule, ema_update, momentum_copy
from densessl.models.queue import NegativeQueue


def neighbour_loss(logits: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """``-mean log softmax(logits)`` at the ``neighbours`` (N, k) indices of each row, the softmax
    over the (N, K) queue logits alone, averaged over rows.

    The formula on given logits; training computes the same term without building them, fused
    with the MoCo term (:func:`~densessl.models.infonce.queue_infonce_and_neighbours`)."""
    log_prob = logits.float() - torch.logsumexp(logits.float(), dim=1, keepdim=True)
    return -log_prob.gather(1, neighbours).mean()


def nearest_keys(features: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (N, k) of the ``k`` rows of ``bank`` (K, C) most similar to each feature (N, C)."""
    return (features.float() @ bank.float().t()).topk(k, dim=1).indices


@register
class RevisitedMoCo(Method):
    name = "revisited_moco"
    config_class = RevisitedMoCoConfig
    min_views = 3
    view_roles = (
        ViewRole("query"),
        ViewRole("key"),
        ViewRole("small", reference="key", rule="intersection", repeat=True),
    )
    light_state_exclude = ("backbone_queue.",)

    def __init__(self, config: RevisitedMoCoConfig, backbone_factory: BackboneFactory) -> None:
        super().__init__()
        self.config = config
        self.encoder_q = Encoder(backbone_factory(), config.hidden_dim, config.dim)
        self.encoder_k = momentum_copy(self.encoder_q)
        self.queue = NegativeQueue(config.dim, config.queue_size)
        self.backbone_queue = NegativeQueue(self.encoder_q.backbone.out_channels, config.queue_size)

    def teacher_momentum(self) -> MomentumSchedule:
        return MomentumSchedule(self.config.momentum_schedule, self.config.momentum)

    def _push(self, keys: torch.Tensor, key_features: torch.Tensor) -> torch.Tensor:
        """Both queues at the same slots: the gathered keys of every process, in rank order.
        Returns the slots written."""
        self.queue.push(all_gather(keys))
        return self.backbone_queue.push(all_gather(key_features))

    def forward(self, views: Views, step: Step) -> dict[str, torch.Tensor]:
        cfg = self.config
        batch = views.images[0].shape[0]
        small = views.images[2:]
        pooled_large, q_large = self.encoder_q.forward_pooled(views.images[0])
        # all small crops in one batch of their own, image-major
        pooled_small, q_small = self.encoder_q.forward_pooled(torch.stack(small, dim=1).flatten(0, 1))
        rows = 1 + len(small)
        q = torch.cat([q_large.unsqueeze(1), q_small.view(batch, len(small), -1)], dim=1)
        q = F.normalize(q.flatten(0, 1), dim=1)  # (B * rows, dim), image-major
        with torch.no_grad():
            m = self.momentum_for(step)
            ema_update(self.encoder_k, self.encoder_q, m)
            pooled_k, k = shuffle_bn_forward(
                self.encoder_k.forward_pooled, views.images[1], step.generator, cfg.shuffle_bn_groups
            )
            k = F.normalize(k.float(), dim=1)
            key_features = F.normalize(pooled_k.float(), dim=1)
            features = torch.cat([pooled_large.unsqueeze(1), pooled_small.view(batch, len(small), -1)], dim=1)
            features = F.normalize(features.flatten(0, 1).float(), dim=1)
        positives = k.repeat_interleave(rows, dim=0)
        # the entries the queue holds now, before any push: a push replaces the buffer rather than
        # writing into it, so this tensor keeps them for both terms and their backward pass
        negatives = self.queue.keys
        use_knn = step.epoch >= cfg.knn_warmup_epochs and cfg.knn_weight > 0
        fresh_share: torch.Tensor | None = None  # the released order's, once the term is on
        if not use_knn:
            loss_moco = queue_infonce(q, positives, negatives, cfg.temperature)
            self._push(k, key_features)
            loss_knn = torch.zeros((), device=q.device)
        else:
            released = cfg.enqueue_order == "released"
            if released:  # the search then sees the current keys in their slots
                written = self._push(k, key_features)
            neighbours = nearest_keys(features, self.backbone_queue.keys, cfg.knn_topk)
            if released:
                # neighbours found in the slots just written are positives whose logits belong to
                # the older keys those slots held: how much of the term that is, as the run goes
                fresh = torch.zeros(self.queue.size, dtype=torch.bool, device=neighbours.device)
                fresh[written] = True
                fresh_share = fresh[neighbours].float().mean()
            else:
                self._push(k, key_features)
            # one pass over the queue serves both terms: they share the log-sum-exp of each row
            loss_moco, loss_knn = queue_infonce_and_neighbours(
                q, positives, negatives, cfg.temperature, neighbours
            )
        loss = loss_moco + (cfg.knn_weight * loss_knn if use_knn else 0.0)
        accepted = views.accepted[:, 2:] if views.accepted is not None else None
        out = {
            "loss": loss,
            "loss_moco": loss_moco.detach(),
            "loss_knn": loss_knn.detach(),
            "momentum": torch.tensor(m),
        }
        if fresh_share is not None:
            out["knn_fresh_share"] = fresh_share
        if accepted is not None:
            # small crops that missed the key after their tries and were drawn freely
            out["small_crop_fallbacks"] = (~accepted).float().mean()
        return out

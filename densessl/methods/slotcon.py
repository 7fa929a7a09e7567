"""SlotCon (Wen et al., 2022): semantic grouping with learnable prototypes and slot contrast.

A student (backbone, 2-D projector, prototypes) and its EMA teacher see two overlapping crops.
Each projected pixel is softly assigned to K learnable prototypes (cosine scores); the
assignment pools pixels into K slots per view. Two losses:

- group loss: over the two crops' overlap, re-sampled on a common grid with RoIAlign (flips
  undone), the student's prototype distribution at temperature 0.1 is trained towards the
  teacher's centred distribution at 0.07, in both directions;
- slot loss: each slot active in both views, through the predictor, must find the teacher's slot
  of the same prototype and image among all active teacher slots of the global batch
  (InfoNCE, tau 0.2, scaled by 2 * tau), in both directions.

Total: w * group + (1 - w) * slot, w = 0.5. The teacher is exported (spec 6.2).

Crops that do not overlap at all (possible after the reference's fallback draw, common with
elongated images) carry no positions for the group loss: RoIAlign re-samples them over the whole
view (a valid box; the reference passes the inverted one, which can abort RoIAlign) and they
are left out of the loss's mean with zero weight, so they add neither loss nor gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from densessl.distributed import all_gather, all_reduce_mean, rank
from densessl.methods.base import BackboneFactory, Method, Step, ViewRole, Views, register
from densessl.methods.configs import SlotConConfig
from densessl.models.heads import build_mlp, trunc_normal_init
from densessl.models.momentum import MomentumSchedule, ema_update, momentum_copy
from densessl.views.geometry import overlap_boxes_batch


class SemanticGrouping(nn.Module):
    """Cosine scores of projected pixels against K prototypes, and attention-pooled slots."""

    def __init__(self, num_prototypes: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.prototypes = nn.Embedding(num_prototypes, dim)
        self.temperature = temperature

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` (B, D, H, W) -> slots (B, K, D) and raw cosine scores (B, K, H, W)."""
        protos = F.normalize(self.prototypes.weight, dim=1)
        scores = torch.einsum("kd,bdhw->bkhw", protos, F.normalize(z, dim=1))
        attention = (scores / self.temperature).softmax(dim=1) + 1e-6
        # slots average the *unnormalised* projections, weighted by each prototype's attention
        slots = torch.einsum("bkhw,bdhw->bkd", attention, z) / attention.sum(dim=(2, 3)).unsqueeze(-1)
        return slots, scores


def align_to_overlap(scores: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Re-sample (B, K, H, W) score maps on an H x W grid over each sample's overlap box.

    ``boxes`` (B, 4) are (x1, y1, x2, y2) in the view's own [0, 1] coordinates, already mirrored
    for flipped views; the output of flipped views is flipped back so both views' grids are in
    source-image orientation.

    A row whose box is empty or inverted (crops that do not overlap) is re-sampled over the whole
    view instead: RoIAlign sizes its sampling grid from the box, and an inverted box far from the
    view gives a negative grid size that aborts the call (``cannot create std::vector larger than
    max_size()``). Such rows carry no correspondence; the caller must mask them out.
    """
    b, _, h, w = scores.shape
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    whole_view = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)
    boxes = torch.where(empty.view(b, 1), whole_view, boxes)
    scale = torch.tensor([w, h, w, h], dtype=scores.dtype, device=scores.device)
    rois = torch.cat([torch.arange(b, device=scores.device, dtype=scores.dtype)[:, None], boxes * scale], 1)
    aligned = roi_align(scores, rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return torch.where(flips.view(b, 1, 1, 1), aligned.flip(-1), aligned)


def group_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    center: torch.Tensor,
    t_student: float,
    t_teacher: float,
    valid: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy from the centred teacher distribution to the student's, per aligned position.

    ``student`` / ``teacher`` (B, K, H, W) aligned raw scores, ``center`` (1, K); mean over the
    positions of samples marked ``valid``.
    """
    target = ((teacher - center.view(1, -1, 1, 1)) / t_teacher).softmax(dim=1)
    per_position = -(target * F.log_softmax(student / t_student, dim=1)).sum(dim=1)
    weights = valid.to(per_position.dtype).view(-1, 1, 1).expand_as(per_position)
    return (per_position * weights).sum() / weights.sum().clamp_min(1.0)


def active_slots(scores: torch.Tensor) -> torch.Tensor:
    """(B, K) mask: prototype k wins the argmax at some pixel of the (unaligned) view."""
    b, k = scores.shape[:2]
    winners = scores.flatten(2).argmax(dim=1)
    mask = torch.zeros(b, k, dtype=torch.bool, device=scores.device)
    return mask.scatter_(1, winners, True)


def slot_contrast(
    slots: torch.Tensor,
    student_mask: torch.Tensor,
    teacher_slots: torch.Tensor,
    teacher_mask: torch.Tensor,
    temperature: float,
    predictor: nn.Module | None = None,
) -> torch.Tensor:
    """InfoNCE between predicted student slots and the same (image, prototype) teacher slot.

    Queries are the student slots (B, K, D) active in both views, passed through ``predictor``
    (so its batch norm sees exactly the query set, as in the reference); keys are every active
    teacher slot of the global batch (gathered). The loss is scaled by 2 * temperature, as in
    the reference.
    """
    b, k, _ = slots.shape
    query_mask = student_mask & teacher_mask
    queries = slots[query_mask]
    if queries.shape[0] == 0 or (predictor is not None and queries.shape[0] < 2):
        # nothing to contrast (or one query, which batch norm cannot normalise): a zero loss that
        # still reaches the predictor, so every process of a DDP run has gradients for it
        touched = predictor(slots.flatten(0, 1)) if predictor is not None else slots
        return touched.sum() * 0.0
    if predictor is not None:
        queries = predictor(queries)
    queries = F.normalize(queries, dim=1)
    all_keys = all_gather(teacher_slots)
    all_mask = all_gather(teacher_mask)
    keys = F.normalize(all_keys[all_mask], dim=1)
    # position of each (image, prototype) in the gathered list of active keys
    position = all_mask.flatten().long().cumsum(0) - 1
    offset = rank() * b * k
    local_index = torch.arange(b * k, device=slots.device).view(b, k)[query_mask] + offset
    target = position[local_index]
    logits = queries @ keys.t().to(queries.dtype) / temperature
    return F.cross_entropy(logits.float(), target) * 2 * temperature


@register
class SlotCon(Method):
    name = "slotcon"
    config_class = SlotConConfig
    encoders = {"query": "encoder_q", "teacher": "encoder_k"}
    exported_role = "teacher"
    # the second crop is redrawn until it overlaps the first (the group loss lives on the overlap)
    view_roles = (ViewRole("view1"), ViewRole("view2", reference="view1", rule="intersection"))

    def __init__(self, config: SlotConConfig, backbone_factory: BackboneFactory) -> None:
        super().__init__()
        self.config = config
        self.encoder_q = backbone_factory()
        channels = self.encoder_q.out_channels
        self.projector_q = build_mlp(
            [channels, config.hidden_dim, config.hidden_dim, config.dim],
            norm=True,
            activation="gelu",
            spatial=True,
        )
        trunc_normal_init(self.projector_q, (nn.Conv2d, nn.Linear))
        self.grouping_q = SemanticGrouping(config.num_prototypes, config.dim, config.teacher_temp)
        self.predictor_slot = build_mlp(
            [config.dim, config.hidden_dim, config.hidden_dim, config.dim], norm=True, activation="gelu"
        )
        trunc_normal_init(self.predictor_slot, (nn.Conv2d, nn.Linear))
        self.encoder_k = momentum_copy(self.encoder_q)
        self.projector_k = momentum_copy(self.projector_q)
        self.grouping_k = momentum_copy(self.grouping_q)
        self.register_buffer("center", torch.zeros(1, config.num_prototypes))

    def _student(self) -> list[nn.Module]:
        return [self.encoder_q, self.projector_q, self.grouping_q]

    def _teacher(self) -> list[nn.Module]:
        return [self.encoder_k, self.projector_k, self.grouping_k]

    def teacher_momentum(self) -> MomentumSchedule:
        return MomentumSchedule("cosine", self.config.teacher_momentum)

    def forward(self, views: Views, step: Step) -> dict[str, torch.Tensor]:
        cfg = self.config
        x1, x2 = views.images[0], views.images[1]
        box1, box2, valid = overlap_boxes_batch(
            views.boxes[:, 0], views.flips[:, 0], views.boxes[:, 1], views.flips[:, 1]
        )
        flip1, flip2 = views.flips[:, 0], views.flips[:, 1]

        slots_q1, scores_q1 = self.grouping_q(self.projector_q(self.encoder_q(x1)))
        slots_q2, scores_q2 = self.grouping_q(self.projector_q(self.encoder_q(x2)))
        with torch.no_grad():
            m = self.momentum_for(step)
            for teacher, student in zip(self._teacher(), self._student(), strict=True):
                ema_update(teacher, student, m)
            slots_k1, scores_k1 = self.grouping_k(self.projector_k(self.encoder_k(x1)))
            slots_k2, scores_k2 = self.grouping_k(self.projector_k(self.encoder_k(x2)))

        scores_q1, scores_q2 = scores_q1.float(), scores_q2.float()
        scores_k1, scores_k2 = scores_k1.float(), scores_k2.float()
        box1, box2 = box1.to(scores_q1.dtype), box2.to(scores_q1.dtype)
        aligned_q1 = align_to_overlap(scores_q1, box1, flip1)
        aligned_q2 = align_to_overlap(scores_q2, box2, flip2)
        with torch.no_grad():
            aligned_k1 = align_to_overlap(scores_k1, box1, flip1)
            aligned_k2 = align_to_overlap(scores_k2, box2, flip2)
        t_s, t_t = cfg.student_temp, cfg.teacher_temp
        loss_group = group_loss(aligned_q1, aligned_k2, self.center, t_s, t_t, valid) + group_loss(
            aligned_q2, aligned_k1, self.center, t_s, t_t, valid
        )
        loss_slot = slot_contrast(
            slots_q1,
            active_slots(scores_q1.detach()),
            slots_k2.float(),
            active_slots(scores_k2),
            cfg.slot_temp,
            self.predictor_slot,
        ) + slot_contrast(
            slots_q2,
            active_slots(scores_q2.detach()),
            slots_k1.float(),
            active_slots(scores_k1),
            cfg.slot_temp,
            self.predictor_slot,
        )
        loss = cfg.group_loss_weight * loss_group + (1 - cfg.group_loss_weight) * loss_slot
        with torch.no_grad():
            self.update_center(torch.cat([scores_k1, scores_k2]))
        return {
            "loss": loss,
            "loss_group": loss_group.detach(),
            "loss_slot": loss_slot.detach(),
            "momentum": torch.tensor(m),
            "overlap_fraction": valid.float().mean(),
        }

    @torch.no_grad()
    def update_center(self, teacher_scores: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean teacher score vector over every pixel of both
        views (unaligned), averaged over processes."""
        mean = all_reduce_mean(teacher_scores.mean(dim=(0, 2, 3)).unsqueeze(0))
        m = self.config.center_momentum
        self.center.mul_(m).add_(mean, alpha=1 - m)

    @torch.no_grad()
    def prototype_scores(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's cosine scores (spec A6): prototypes of ``grouping_k`` against
        ``projector_k(encoder_k(x))``."""
        return self.grouping_k(self.projector_k(self.encoder_k(images)))[1]

"""Every method's hyper-parameters, as plain dataclasses (no torch).

The ``method`` section of a recipe is read into one of these; the configuration layer and the
command line load this module without the networks, and each method module imports its own
class from here. A new method adds its dataclass here and an entry in
:mod:`densessl.methods.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DenseCLConfig",
    "MGCConfig",
    "MGCGrouping",
    "MoCoV2Config",
    "RevisitedMoCoConfig",
    "SlotConConfig",
]


@dataclass
class MoCoV2Config:
    """MoCo-v2 (:mod:`densessl.methods.mocov2`)."""

    name: Literal["mocov2"] = "mocov2"
    dim: int = 128
    hidden_dim: int = 2048
    queue_size: int = 65536
    temperature: float = 0.2
    momentum: float = 0.999
    momentum_schedule: Literal["constant", "cosine"] = "constant"
    #: pseudo-GPU groups for shuffle-BN in a single process (1 = no shuffling)
    shuffle_bn_groups: int = 2


@dataclass
class DenseCLConfig(MoCoV2Config):
    """MoCo-v2's hyper-parameters plus the weight of the dense term (:mod:`densessl.methods.densecl`)."""

    name: Literal["densecl"] = "densecl"  # type: ignore[assignment]
    #: weight of the dense term; the global term gets 1 - loss_lambda
    loss_lambda: float = 0.5


@dataclass
class RevisitedMoCoConfig(MoCoV2Config):
    """MoCo-v2 with constrained multi-crop and the nearest-neighbour loss
    (:mod:`densessl.methods.revisited_moco`)."""

    name: Literal["revisited_moco"] = "revisited_moco"  # type: ignore[assignment]
    momentum: float = 0.995
    #: neighbours of each query, looked up in backbone space among the queued keys
    knn_topk: int = 20
    #: weight of the nearest-neighbour term
    knn_weight: float = 0.4
    #: ``released``: the current keys enter both queues before the neighbour search, after the
    #: negative logits (the repository's main script); ``consistent``: search, then enqueue (its
    #: warm-up script)
    enqueue_order: Literal["released", "consistent"] = "released"
    #: epochs trained with the MoCo term only before the neighbour term starts (0: from the start)
    knn_warmup_epochs: int = 0

    def validate(self) -> None:
        """ValueError with one line when the neighbours do not fit the queue."""
        if self.knn_topk > self.queue_size:
            raise ValueError(f"knn_topk {self.knn_topk} exceeds queue_size {self.queue_size}")


@dataclass
class SlotConConfig:
    """SlotCon (:mod:`densessl.methods.slotcon`)."""

    name: Literal["slotcon"] = "slotcon"
    num_prototypes: int = 256
    hidden_dim: int = 4096
    dim: int = 256
    teacher_momentum: float = 0.99
    teacher_temp: float = 0.07
    student_temp: float = 0.1
    center_momentum: float = 0.9
    group_loss_weight: float = 0.5
    slot_temp: float = 0.2


@dataclass
class MGCGrouping:
    """One MGC granularity as a grouping of patch tokens (:mod:`densessl.methods.mgc`).

    ``tokens``: side of the square block of patch tokens averaged into one vector (1 = the
    patches themselves; 2 and 7 give MGC's 32 px and 112 px regions at ViT-S/16, 224 px). The
    token grid must be a multiple of it. ``cap``: corresponding pairs kept per image (top-M by
    overlap weight). ``weight``: the granularity's weight in the total loss. ``stride_ratios``,
    ``row_clamp``, ``col_clamp``: the overlap-dependent sampling strides of view-1 cells
    (:func:`densessl.views.geometry.mgc_correspondences`).
    """

    name: str
    tokens: int
    cap: int
    weight: float
    stride_ratios: tuple[int, int]
    row_clamp: tuple[int, int]
    col_clamp: tuple[int, int]


def _mgc_groupings() -> list[MGCGrouping]:
    return [
        MGCGrouping("patch", 1, 10, 10.0, (12, 8), (2, 8), (2, 6)),
        MGCGrouping("region32", 2, 10, 10.0, (8, 4), (2, 4), (1, 3)),
        MGCGrouping("region112", 7, 2, 2.0, (1, 1), (1, 1), (1, 1)),
    ]


@dataclass
class MGCConfig:
    """MGC, multi-grained contrast (:mod:`densessl.methods.mgc`)."""

    name: Literal["mgc"] = "mgc"
    dim: int = 128
    hidden_dim: int = 4096
    temperature: float = 0.1
    #: start of the cosine teacher momentum schedule (to 1, per iteration)
    teacher_momentum: float = 0.996
    #: ``released``: the overlap weights only choose the top-M pairs and the loss is the plain
    #: mean over all M pairs, padding included (the reference code); ``weighted``: each pair's
    #: loss is weighted by its overlap, padding gets weight 0 (the paper's description)
    pair_loss: Literal["released", "weighted"] = "released"
    #: re-draw every Linear layer after the momentum networks are copied (the reference's
    #: initialisation order: online and momentum Linear weights start different); False starts
    #: both branches equal
    reinit_linear: bool = True
    groupings: list[MGCGrouping] = field(default_factory=_mgc_groupings)

    def validate(self) -> None:
        """ValueError with one line for an inconsistent set of groupings."""
        if not self.groupings:
            raise ValueError("groupings: at least one granularity is needed")
        names = [g.name for g in self.groupings]
        if len(set(names)) != len(names):
            raise ValueError(f"groupings: names must be distinct, got {names}")
        for i, g in enumerate(self.groupings):
            where = f"groupings.{i} ({g.name})"
            if g.tokens < 1 or g.cap < 1:
                raise ValueError(f"{where}: tokens and cap must be at least 1")
            if g.weight < 0:
                raise ValueError(f"{where}: weight must be >= 0, got {g.weight}")
            if min(g.stride_ratios) < 0:
                raise ValueError(f"{where}: stride_ratios must be >= 0, got {list(g.stride_ratios)}")
            for clamp_name, (low, high) in (("row_clamp", g.row_clamp), ("col_clamp", g.col_clamp)):
                if not 1 <= low <= high:
                    raise ValueError(f"{where}: {clamp_name} must be [low, high] with 1 <= low <= high")
        if sum(g.weight for g in self.groupings) <= 0:
            raise ValueError("groupings: the weights must not all be 0")

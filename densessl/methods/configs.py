"""Every method's hyper-parameters, as plain dataclasses (no torch).

The ``method`` section of a recipe is read into one of these; the configuration layer and the
command line load this module without the networks, and each method module imports its own
class from here. A new method adds its dataclass here and an entry in
:mod:`densessl.methods.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DenseCLConfig", "MoCoV2Config", "SlotConConfig"]


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

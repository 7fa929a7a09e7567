"""Momentum (EMA) teachers and their schedules.

Only parameters are averaged; a teacher's BN running statistics are its own, as in every
reference implementation (PyTorch semantics).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


def momentum_copy(student: nn.Module, build: Callable[[], nn.Module] | None = None) -> nn.Module:
    """A frozen EMA teacher of ``student``, equal to it in every weight and buffer.

    Without ``build`` the teacher is a deep copy. Where the teacher must differ from the student
    in what it does rather than in what it holds (no drop path in MGC's momentum ViT), ``build``
    constructs it from other arguments; it runs with the global RNG state saved and restored, so
    building a teacher draws nothing that the rest of the initialisation would have drawn, and
    the student's state is then loaded into it.
    """
    if build is None:
        teacher = copy.deepcopy(student)
    else:
        with torch.random.fork_rng(devices=[]):
            teacher = build()
        teacher.load_state_dict(student.state_dict(), strict=True)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameters only."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


@dataclass(frozen=True)
class MomentumSchedule:
    """How a method's teacher momentum moves: ``kind`` from ``base`` (see :func:`momentum_at`),
    re-evaluated every iteration or once per epoch."""

    kind: Literal["constant", "cosine"]
    base: float
    unit: Literal["iteration", "epoch"] = "iteration"


def momentum_at(schedule: Literal["constant", "cosine"], base: float, step: int, total_steps: int) -> float:
    """Teacher momentum at iteration ``step``.

    ``constant``: MoCo-v2 / DenseCL / revisited MoCo. ``cosine``: SlotCon and MGC,
    1 - (1 - base) * (cos(pi * step / total) + 1) / 2, rising from ``base`` to 1.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
        return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
    raise ValueError(f"unknown momentum schedule '{schedule}'")

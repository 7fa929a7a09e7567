"""Momentum teachers: copied, or built with other arguments and loaded from the student; their schedules."""

from __future__ import annotations

import pytest
import torch

from densessl.models.momentum import ema_update, momentum_at, momentum_copy
from densessl.models.vit import ViTBackbone


def tiny_vit(drop_path_rate: float) -> ViTBackbone:
    return ViTBackbone("vit_tiny", patch_size=8, img_size=32, drop_path_rate=drop_path_rate)


def test_a_teacher_built_without_drop_path_holds_the_students_weights_and_is_deterministic():
    torch.manual_seed(0)
    student = tiny_vit(drop_path_rate=0.5)
    rng_before = torch.get_rng_state()
    teacher = momentum_copy(student, build=lambda: tiny_vit(drop_path_rate=0.0))
    # building the teacher drew nothing from the global generator
    assert torch.equal(torch.get_rng_state(), rng_before)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    assert set(s_state) == set(t_state) and all(torch.equal(s_state[k], t_state[k]) for k in s_state)
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    student.train()
    teacher.train()
    # in training mode the student drops paths at random, the teacher never does
    assert not torch.equal(student(x), student(x))
    assert torch.equal(teacher(x), teacher(x))
    student.eval()
    torch.testing.assert_close(teacher(x), student(x))


def test_a_copied_teacher_keeps_the_students_stochastic_layers():
    torch.manual_seed(0)
    student = tiny_vit(drop_path_rate=0.5)
    teacher = momentum_copy(student)
    teacher.train()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(teacher(x), teacher(x))


def test_ema_update_moves_the_teacher_toward_the_student():
    torch.manual_seed(0)
    student = torch.nn.Linear(3, 2)
    teacher = momentum_copy(student)
    with torch.no_grad():
        student.weight.add_(1.0)
    before = teacher.weight.clone()
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight, 0.9 * before + 0.1 * student.weight)


def test_momentum_schedules():
    assert momentum_at("constant", 0.999, 50, 100) == 0.999
    assert momentum_at("cosine", 0.99, 0, 100) == pytest.approx(0.99)
    assert momentum_at("cosine", 0.99, 50, 100) == pytest.approx(0.995)
    assert momentum_at("cosine", 0.99, 100, 100) == pytest.approx(1.0)

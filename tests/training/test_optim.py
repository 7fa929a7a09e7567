"""Learning-rate schedules and LARS against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from densessl.config import OptimConfig
from densessl.training.optim import LARS, build_optimizer, clip_gradients, lr_at


def test_cosine_per_epoch_changes_only_at_epoch_starts():
    cfg = OptimConfig(lr=0.3, schedule="cosine", schedule_unit="epoch")
    assert lr_at(cfg, 0, 10, 4) == pytest.approx(0.3)
    assert lr_at(cfg, 9, 10, 4) == pytest.approx(0.3)
    assert lr_at(cfg, 10, 10, 4) == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(cfg, 39, 10, 4) == pytest.approx(0.3 * 0.5 * (1 + math.cos(3 * math.pi / 4)))


def test_warmup_then_cosine_per_iteration():
    cfg = OptimConfig(
        lr=2.0,
        schedule="cosine",
        schedule_unit="iteration",
        warmup_epochs=1,
        warmup_start_factor=0.01,
        min_lr=1e-6,
    )
    assert lr_at(cfg, 0, 10, 5) == pytest.approx(0.02)
    assert lr_at(cfg, 5, 10, 5) == pytest.approx(0.02 + (2.0 - 0.02) * 0.5)
    assert lr_at(cfg, 10, 10, 5) == pytest.approx(2.0)
    assert lr_at(cfg, 30, 10, 5) == pytest.approx(1e-6 + (2.0 - 1e-6) * 0.5)
    assert lr_at(cfg, 50, 10, 5) == pytest.approx(1e-6)


def test_step_schedule():
    cfg = OptimConfig(lr=1.0, schedule="step", milestones=[2, 3])
    assert [lr_at(cfg, s, 1, 4) for s in range(4)] == pytest.approx([1.0, 1.0, 0.1, 0.01])


def test_lars_update_matches_formula_and_skips_1d_parameters():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    cfg = OptimConfig(name="lars", lr=0.5, weight_decay=0.1, momentum=0.9, lars_eta=0.001)
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, LARS)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    model(torch.randn(4, 3)).pow(2).sum().backward()
    gw, gb = model.weight.grad.clone(), model.bias.grad.clone()
    optimizer.step()
    g = gw + 0.1 * w0
    expected_w = w0 - 0.5 * g * (0.001 * w0.norm() / g.norm())
    assert torch.allclose(model.weight, expected_w, atol=1e-7)
    assert torch.allclose(model.bias, b0 - 0.5 * gb, atol=1e-7)  # neither decay nor adaptation


def test_per_parameter_clipping_bounds_each_gradient():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    clip_gradients(model, OptimConfig(clip_grad=3.0, clip_mode="per_parameter"))
    assert all(float(p.grad.norm()) == pytest.approx(3.0, rel=1e-5) for p in model.parameters())
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    total = clip_gradients(model, OptimConfig(clip_grad=3.0, clip_mode="global"))
    count = sum(p.numel() for p in model.parameters())
    assert float(total) == pytest.approx(10.0 * math.sqrt(count), rel=1e-5)
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
    assert float(norm) == pytest.approx(3.0, rel=1e-5)


@pytest.mark.parametrize("clip_grad, clip_mode", [(None, "global"), (3.0, "global"), (3.0, "per_parameter")])
def test_clip_gradients_returns_the_norm_before_clipping(clip_grad, clip_mode):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    grads = [torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([12.0, 0.0]), torch.tensor([[0.0, 0.0]])]
    for p, g in zip(model.parameters(), grads, strict=False):
        p.grad = g.clone()
    # the last bias has no gradient (a frozen or unused parameter): left out, not an error
    norm = clip_gradients(model, OptimConfig(clip_grad=clip_grad, clip_mode=clip_mode))
    assert float(norm) == pytest.approx(13.0)
    after = [p.grad for p in model.parameters() if p.grad is not None]
    if clip_grad is None:
        assert all(torch.equal(a, g) for a, g in zip(after, grads, strict=True))
    else:
        assert all(float(a.norm()) <= 3.0 + 1e-5 for a in after)

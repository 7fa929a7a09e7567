"""Parameter groups with lr and weight-decay scales, and the schedule that drives them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from densessl.config import OptimConfig
from densessl.training.optim import Schedule, build_optimizer


def groups() -> tuple[nn.Linear, nn.Linear, list[dict]]:
    torch.manual_seed(0)
    body, head = nn.Linear(4, 4), nn.Linear(4, 2)
    return (
        body,
        head,
        [
            {"params": list(body.parameters())},
            {"params": list(head.parameters()), "lr_scale": 0.1, "wd_scale": 0.0},
        ],
    )


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_each_group_gets_the_scheduled_values_times_its_scales(name):
    body, head, param_groups = groups()
    config = OptimConfig(name=name, lr=1.0, weight_decay=0.1, schedule="cosine", schedule_unit="iteration")
    optimizer = build_optimizer(param_groups, config)
    schedule = Schedule(config, steps_per_epoch=10, epochs=2)
    lr = schedule.apply(optimizer, 5)
    assert lr == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 20)))
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert by_param[id(body.weight)]["lr"] == pytest.approx(lr)
    assert by_param[id(body.weight)]["weight_decay"] == pytest.approx(0.1)
    assert by_param[id(head.weight)]["lr"] == pytest.approx(0.1 * lr)
    assert by_param[id(head.weight)]["weight_decay"] == 0.0
    # LARS: 1-D parameters keep neither decay nor adaptation, whatever their group says
    if name == "lars":
        assert by_param[id(body.bias)]["weight_decay"] == 0.0 and not by_param[id(body.bias)]["lars_adapt"]


def test_a_scaled_group_moves_by_its_scale():
    body, head, param_groups = groups()
    config = OptimConfig(name="sgd", lr=1.0, weight_decay=0.0, momentum=0.0, schedule="constant")
    optimizer = build_optimizer(param_groups, config)
    Schedule(config, 1, 1).apply(optimizer, 0)
    before = head.weight.detach().clone(), body.weight.detach().clone()
    (head(body(torch.ones(1, 4)))).sum().backward()
    grads = head.weight.grad.clone(), body.weight.grad.clone()
    optimizer.step()
    torch.testing.assert_close(head.weight, before[0] - 0.1 * grads[0])
    torch.testing.assert_close(body.weight, before[1] - grads[1])


def test_weight_decay_follows_a_cosine_to_its_end_value():
    config = OptimConfig(weight_decay=0.04, weight_decay_end=0.4, schedule_unit="iteration")
    schedule = Schedule(config, steps_per_epoch=10, epochs=10)
    assert schedule.weight_decay(0) == pytest.approx(0.04)
    assert schedule.weight_decay(50) == pytest.approx(0.22)
    assert schedule.weight_decay(100) == pytest.approx(0.4)
    per_epoch = Schedule(OptimConfig(weight_decay=0.04, weight_decay_end=0.4), 10, 10)
    assert per_epoch.weight_decay(59) == per_epoch.weight_decay(50) == pytest.approx(0.22)
    assert Schedule(OptimConfig(weight_decay=0.1), 10, 10).weight_decay(73) == 0.1

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


def test_the_teacher_momentum_follows_the_methods_schedule_per_iteration_or_per_epoch():
    from densessl.models.momentum import MomentumSchedule, momentum_at

    schedule = Schedule(OptimConfig(), steps_per_epoch=10, epochs=5)
    cosine = MomentumSchedule("cosine", 0.99)
    assert [schedule.momentum(s, cosine) for s in (0, 13, 50)] == pytest.approx(
        [momentum_at("cosine", 0.99, s, 50) for s in (0, 13, 50)]
    )
    by_epoch = MomentumSchedule("cosine", 0.99, unit="epoch")
    assert (
        schedule.momentum(13, by_epoch)
        == schedule.momentum(19, by_epoch)
        == pytest.approx(momentum_at("cosine", 0.99, 10, 50))
    )
    assert schedule.momentum(20, by_epoch) > schedule.momentum(19, by_epoch)


def test_the_trainer_hands_the_schedules_momentum_to_the_method(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from densessl.config import load_config
    from densessl.training.trainer import Trainer

    seen = []

    def fixed(self, step, method_schedule):
        seen.append((step, method_schedule))
        return 0.25

    monkeypatch.setattr(Schedule, "momentum", fixed)
    recipe = Path(__file__).resolve().parents[2] / "densessl/recipes/quick/slotcon_synthetic.yaml"
    tiny = [
        "data.synthetic_length=16", "data.workers=0", "train.batch_size=8", "train.epochs=1",
        "train.log_every=1", "train.tensorboard=false", "train.progress=false", "views.*.crop.size=32",
        "model.width=0.125", "method.num_prototypes=8", "method.hidden_dim=16", "method.dim=8",
    ]  # fmt: skip
    Trainer(load_config(recipe, tiny), tmp_path).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["momentum"] for r in records] == [0.25, 0.25]
    assert [s for s, _ in seen] == [0, 1] and seen[0][1].kind == "cosine"


def test_outside_the_trainer_a_method_evaluates_its_own_schedule():
    from densessl.methods.base import Step
    from densessl.methods.densecl import DenseCL, DenseCLConfig
    from densessl.models.momentum import momentum_at
    from tests.helpers import tiny_factory

    method = DenseCL(
        DenseCLConfig(queue_size=16, hidden_dim=8, dim=4, momentum_schedule="cosine"), tiny_factory()
    )
    step = Step(step=3, total_steps=10, epoch=0, generator=torch.Generator())
    assert method.momentum_for(step) == pytest.approx(momentum_at("cosine", 0.999, 3, 10))
    step.momentum = 0.5
    assert method.momentum_for(step) == 0.5


def test_the_trainer_optimises_the_methods_parameter_groups_with_their_scales(tmp_path, monkeypatch):
    import json

    import densessl.training.trainer as trainer_module
    from densessl.config import load_config
    from densessl.methods.densecl import DenseCL
    from densessl.training.trainer import Trainer
    from tests.helpers import QUICK, TINY

    def param_groups(self):
        backbone = list(self.encoder_q.backbone.parameters())
        heads = [
            p
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("encoder_q.backbone.")
        ]
        return [{"params": backbone, "lr_scale": 0.0, "wd_scale": 0.0}, {"params": heads, "lr_scale": 0.5}]

    built = {}

    def build_model(config):
        method = built["method"] = real_build_model(config)
        built["initial"] = {n: p.detach().clone() for n, p in method.named_parameters()}
        return method

    def build(groups, config):
        built["optimizer"] = build_optimizer(groups, config)
        return built["optimizer"]

    real_build_model = trainer_module.build_model
    monkeypatch.setattr(DenseCL, "param_groups", param_groups)
    monkeypatch.setattr(trainer_module, "build_model", build_model)
    monkeypatch.setattr(trainer_module, "build_optimizer", build)
    Trainer(load_config(QUICK, [*TINY, "train.max_steps=2"]), tmp_path).fit()
    lr = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]["lr"]
    assert lr > 0
    assert [g["lr"] for g in built["optimizer"].param_groups] == pytest.approx([0.0, 0.5 * lr])
    moved = {n for n, p in built["method"].named_parameters() if not torch.equal(p, built["initial"][n])}
    # the backbone at lr 0 kept its initial weights while the heads trained (the teacher follows by EMA)
    assert not any(n.startswith("encoder_q.backbone.") for n in moved)
    assert any(n.startswith("encoder_q.global_head.") for n in moved)
    assert any(n.startswith("encoder_q.dense_head.") for n in moved)

"""Method config dataclasses: one definition each, still importable beside their method."""

from __future__ import annotations

import dataclasses

import pytest

from densessl.methods import configs
from densessl.methods.densecl import DenseCLConfig
from densessl.methods.mocov2 import MoCoV2Config
from densessl.methods.slotcon import SlotConConfig


def test_method_modules_use_the_light_classes() -> None:
    # one class, not a copy: a config read from a recipe must be accepted by the method
    assert (MoCoV2Config, DenseCLConfig, SlotConConfig) == (
        configs.MoCoV2Config,
        configs.DenseCLConfig,
        configs.SlotConConfig,
    )
    for cls in (MoCoV2Config, DenseCLConfig, SlotConConfig):
        assert cls.__module__ == "densessl.methods.configs"


@pytest.mark.parametrize(
    ("cls", "name", "values"),
    [
        (
            configs.MoCoV2Config,
            "mocov2",
            {"dim": 128, "queue_size": 65536, "temperature": 0.2, "momentum": 0.999},
        ),
        (configs.DenseCLConfig, "densecl", {"dim": 128, "loss_lambda": 0.5, "shuffle_bn_groups": 2}),
        (configs.SlotConConfig, "slotcon", {"num_prototypes": 256, "teacher_temp": 0.07, "slot_temp": 0.2}),
    ],
)
def test_defaults_unchanged_by_the_move(cls: type, name: str, values: dict) -> None:
    config = cls()
    assert config.name == name
    assert {k: getattr(config, k) for k in values} == values


def test_densecl_extends_mocov2_field_for_field() -> None:
    mocov2 = [f.name for f in dataclasses.fields(configs.MoCoV2Config)]
    densecl = [f.name for f in dataclasses.fields(configs.DenseCLConfig)]
    assert densecl == [*mocov2, "loss_lambda"]

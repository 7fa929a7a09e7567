"""The method registry: entries agree with their classes, lookups are lazy, registration is guarded."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from densessl.config import from_dict
from densessl.errors import ConfigError
from densessl.methods import METHODS, Method, build_method, method_names, method_spec, register, registry
from densessl.methods.base import METHODS as BASE_METHODS
from densessl.methods.base import build_method as base_build_method
from densessl.methods.base import register as base_register
from densessl.methods.configs import (
    DenseCLConfig,
    MGCConfig,
    MoCoV2Config,
    RevisitedMoCoConfig,
    SlotConConfig,
)
from tests.helpers import tiny_factory

BUILT_IN = {
    "mocov2": ("densessl.methods.mocov2", "MoCoV2", MoCoV2Config),
    "densecl": ("densessl.methods.densecl", "DenseCL", DenseCLConfig),
    "slotcon": ("densessl.methods.slotcon", "SlotCon", SlotConConfig),
    "mgc": ("densessl.methods.mgc", "MGC", MGCConfig),
    "revisited_moco": ("densessl.methods.revisited_moco", "RevisitedMoCo", RevisitedMoCoConfig),
}


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry for tests that register methods (the real one is left as it was)."""
    specs = dict(registry._SPECS)
    monkeypatch.setattr(registry, "_SPECS", specs)
    return specs


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_each_entry_loads_the_class_that_implements_it(name: str) -> None:
    module, cls_name, config_class = BUILT_IN[name]
    cls = getattr(importlib.import_module(module), cls_name)
    spec = method_spec(name)
    assert spec.load() is cls is METHODS[name]
    assert spec.config_class is cls.config_class is config_class
    # the recipe check reads min_views from the entry, the trainer from the class
    assert spec.min_views == cls.min_views
    assert config_class().name == name


def test_names_and_old_homes() -> None:
    assert method_names() == sorted(BUILT_IN) == sorted(METHODS) == sorted(METHODS.keys())
    assert len(METHODS) == len(BUILT_IN)
    assert "simclr" not in METHODS
    with pytest.raises(KeyError):
        METHODS["simclr"]
    # densessl.methods.base was the registry's home: the same objects from there
    assert (BASE_METHODS, base_build_method, base_register) == (METHODS, build_method, register)


def test_build_method_gives_the_configured_method() -> None:
    config = MoCoV2Config(dim=4, hidden_dim=6, queue_size=8)
    method = build_method(config, tiny_factory())
    assert type(method) is METHODS["mocov2"]
    assert method.config is config
    assert method.queue.keys.shape == (8, 4)


@dataclass
class EchoConfig:
    name: Literal["echo"] = "echo"
    scale: float = 1.0


class Echo(Method):
    name = "echo"
    config_class = EchoConfig
    min_views = 3

    def __init__(self, config: EchoConfig, backbone_factory: object) -> None:
        super().__init__()
        self.config = config
        self.weight = torch.nn.Parameter(torch.ones(()))


def test_a_registered_method_is_read_from_recipes_and_built(private_registry: dict) -> None:
    assert register(Echo) is Echo
    assert method_names() == sorted([*BUILT_IN, "echo"])
    spec = method_spec("echo")
    assert (spec.config_class, spec.min_views, spec.target) == (EchoConfig, 3, f"{__name__}:Echo")
    config = from_dict({"method": {"name": "echo", "scale": 2.0}, "views": [{}, {}, {}]})
    assert config.method == EchoConfig(scale=2.0)
    assert isinstance(build_method(config.method, tiny_factory()), Echo)
    # the entry's min_views stops a recipe before any network is built
    with pytest.raises(ConfigError, match="needs at least 3 views"):
        from_dict({"method": {"name": "echo"}, "views": [{}, {}]})


def test_registering_twice_is_harmless_but_a_taken_name_is_refused(private_registry: dict) -> None:
    register(Echo)
    register(Echo)

    class Impostor(Echo):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    with pytest.raises(ValueError, match="already registered"):
        METHODS["mocov2"] = type("MoCoV2", (Echo,), {"name": "mocov2"})
    with pytest.raises(ValueError, match="the key must be its name"):
        METHODS["other"] = Echo
    assert method_spec("echo").target == f"{__name__}:Echo"


def test_an_entry_that_drifted_from_its_class_is_refused(private_registry: dict) -> None:
    private_registry["mocov2"] = registry.MethodSpec(
        "mocov2", MoCoV2Config, "densessl.methods.mocov2:MoCoV2", min_views=3
    )
    with pytest.raises(TypeError, match="does not match densessl.methods.mocov2:MoCoV2"):
        METHODS["mocov2"]
    private_registry["mocov2"] = registry.MethodSpec(
        "mocov2", DenseCLConfig, "densessl.methods.mocov2:MoCoV2"
    )
    with pytest.raises(TypeError, match="does not match"):
        build_method(MoCoV2Config(), tiny_factory())


def test_deleting_an_entry(private_registry: dict) -> None:
    register(Echo)
    del METHODS["echo"]
    assert "echo" not in METHODS
    assert "echo" not in method_names()

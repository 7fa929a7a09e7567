"""Methods by name, without importing them: name -> config class, where the network lives.

Reading a recipe only needs each method's config dataclass (:mod:`densessl.methods.configs`),
so this registry holds the name of the class that implements a method (``"module:Class"``) and
imports it on first use (:func:`build_method`, ``METHODS[name]``). ``import densessl.config``
therefore loads no torch, and a method module may import the configuration layer without a
cycle. Imports flow one way: configs <- registry <- config; method modules -> configs.

:data:`METHODS` is the historical mapping name -> method class; it is now lazy (looking a name up
imports that method's module; listing the names imports nothing). :func:`register` still adds a
method defined elsewhere (a class decorator, as before).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from densessl.methods.configs import (
    DenseCLConfig,
    MGCConfig,
    MoCoV2Config,
    RevisitedMoCoConfig,
    SlotConConfig,
)

if TYPE_CHECKING:
    from densessl.methods.base import Method
    from densessl.models.backbones import Backbone

__all__ = ["METHODS", "MethodSpec", "build_method", "method_names", "method_spec", "register"]


@dataclass(frozen=True)
class MethodSpec:
    """What the configuration layer knows of a method without importing it.

    ``target`` is ``"package.module:Class"``; ``min_views`` mirrors the class's own ``min_views``
    (the recipe is checked against it before any network is built).
    """

    name: str
    config_class: type
    target: str
    min_views: int = 2

    def load(self) -> type[Method]:
        """Import the method's module and return its class, checked against this entry."""
        module, _, qualname = self.target.partition(":")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        found = (cls.name, cls.config_class, cls.min_views)
        if found != (self.name, self.config_class, self.min_views):
            # entry and class drifted apart: recipes would be checked against one and run by the other
            raise TypeError(
                f"registry entry {self.name!r} does not match {self.target}: "
                f"(name, config_class, min_views) = {found} vs "
                f"{(self.name, self.config_class, self.min_views)}"
            )
        return cls


_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("mocov2", MoCoV2Config, "densessl.methods.mocov2:MoCoV2"),
        MethodSpec("densecl", DenseCLConfig, "densessl.methods.densecl:DenseCL"),
        MethodSpec("slotcon", SlotConConfig, "densessl.methods.slotcon:SlotCon"),
        MethodSpec("mgc", MGCConfig, "densessl.methods.mgc:MGC"),
        MethodSpec("revisited_moco", RevisitedMoCoConfig, "densessl.methods.revisited_moco:RevisitedMoCo", 3),
    )
}


def method_names() -> list[str]:
    """Every registered method's name, sorted."""
    return sorted(_SPECS)


def method_spec(name: str) -> MethodSpec:
    """The entry of method ``name``; KeyError for an unknown name."""
    return _SPECS[name]


def _target(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method defined outside this registry under ``cls.name``.

    The built-in methods are listed above, so their decorator only checks that the class agrees
    with its entry; another class claiming a taken name is refused.
    """
    spec = MethodSpec(cls.name, cls.config_class, _target(cls), cls.min_views)
    known = _SPECS.get(cls.name)
    if known is not None and known != spec:
        raise ValueError(f"method {cls.name!r} is already registered as {known}; {_target(cls)} gives {spec}")
    _SPECS[cls.name] = spec
    return cls


class _LazyMethods(MutableMapping[str, "type[Method]"]):
    """name -> method class, importing a method's module only when its class is asked for."""

    def __getitem__(self, name: str) -> type[Method]:
        return _SPECS[name].load()

    def __setitem__(self, name: str, cls: type[Method]) -> None:
        if name != cls.name:
            raise ValueError(f"METHODS[{name!r}] = {cls.__name__}: the key must be its name {cls.name!r}")
        register(cls)

    def __delitem__(self, name: str) -> None:
        del _SPECS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(_SPECS))

    def __len__(self) -> int:
        return len(_SPECS)

    def __contains__(self, name: object) -> bool:
        return name in _SPECS

    def __repr__(self) -> str:
        return f"METHODS({', '.join(_SPECS)})"


#: name -> method class (lazy: see the module docstring)
METHODS: MutableMapping[str, type[Method]] = _LazyMethods()


def build_method(config: Any, backbone_factory: Callable[..., Backbone]) -> Method:
    """Instantiate the method whose ``name`` matches ``config.name`` (importing its module)."""
    return _SPECS[config.name].load()(config, backbone_factory)

"""Pre-training methods, found by name through :mod:`densessl.methods.registry`.

Importing this package loads no torch: the registry and the config dataclasses are light, and a
method's module (with its networks) is imported the first time it is built or looked up in
``METHODS``. ``Method``, ``Step`` and ``Views`` (:mod:`densessl.methods.base`, which needs torch)
are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from densessl.methods.registry import METHODS, MethodSpec, build_method, method_names, method_spec, register

if TYPE_CHECKING:
    from densessl.methods.base import BackboneFactory, Method, Step, Views

__all__ = [
    "METHODS",
    "BackboneFactory",
    "Method",
    "MethodSpec",
    "Step",
    "Views",
    "build_method",
    "method_names",
    "method_spec",
    "register",
]

#: names served from densessl.methods.base on first access (it imports torch)
_FROM_BASE = frozenset({"BackboneFactory", "Method", "Step", "Views"})


def __getattr__(name: str) -> Any:
    # only an explicit list: an unknown name must raise AttributeError so that
    # ``from densessl.methods import mocov2`` falls back to importing the submodule
    if name in _FROM_BASE:
        return getattr(importlib.import_module("densessl.methods.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

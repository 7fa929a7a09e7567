"""Imports flow one way: the configuration layer loads no networks, and methods may import it.

Each check runs in a fresh interpreter: in this process the other tests have long imported torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: modules that must never pull in torch: what reading a recipe or raising an error needs
LIGHT = (
    "densessl.errors",
    "densessl.recipes",
    "densessl.methods",
    "densessl.methods.configs",
    "densessl.methods.registry",
    "densessl.views.spec",
)
HEAVY = ("torch", "torchvision", "timm")
METHOD_MODULES = (
    "densessl.methods.base",
    "densessl.methods.mocov2",
    "densessl.methods.densecl",
    "densessl.methods.slotcon",
)


def fresh(code: str, cwd: Path | None = None) -> dict:
    """Run ``code`` in a new interpreter; it must print one JSON value, which is returned."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if cwd is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(cwd), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_light_modules_load_no_torch() -> None:
    # one interpreter, the modules in turn: the report names the first one that brings torch in
    heavy = fresh(
        f"""
        import importlib, json, sys
        heavy = {{}}
        for module in {list(LIGHT)!r}:
            importlib.import_module(module)
            heavy[module] = [m for m in {list(HEAVY)!r} if m in sys.modules]
        print(json.dumps(heavy))
        """
    )
    assert heavy == {module: [] for module in LIGHT}


@pytest.fixture(scope="module")
def config_modules() -> list[str]:
    """The modules loaded by ``import densessl.config`` in a fresh interpreter."""
    return fresh("import json, sys\nimport densessl.config\nprint(json.dumps(sorted(sys.modules)))")


def test_the_config_loads_no_method_nor_model(config_modules: list[str]) -> None:
    assert "densessl.config" in config_modules
    assert [m for m in config_modules if m in METHOD_MODULES or m.startswith("densessl.models")] == []


def test_the_config_loads_no_torch(config_modules: list[str]) -> None:
    assert [m for m in HEAVY if m in config_modules] == []


def test_listing_methods_imports_none_of_them() -> None:
    result = fresh(
        """
        import json, sys
        from densessl.methods import METHODS, method_names
        names = sorted(METHODS)
        found = "densecl" in METHODS
        modules = sorted(m for m in sys.modules if m.startswith("densessl.methods."))
        print(json.dumps([names, method_names(), found, modules]))
        """
    )
    names, listed, found, modules = result
    assert names == listed == ["densecl", "mgc", "mocov2", "revisited_moco", "slotcon"]
    assert found is True
    assert modules == ["densessl.methods.configs", "densessl.methods.registry"]


EXTERNAL_METHOD = '''
"""A method module that reads the configuration layer at import time."""
from dataclasses import dataclass
from typing import Literal

import torch

from densessl.config import ModelConfig
from densessl.methods.base import Method, register

DEFAULT_ARCH = ModelConfig().arch


@dataclass
class EchoConfig:
    name: Literal["echo"] = "echo"
    scale: float = 1.0


@register
class Echo(Method):
    name = "echo"
    config_class = EchoConfig

    def __init__(self, config, backbone_factory):
        super().__init__()
        self.config = config
        self.weight = torch.nn.Parameter(torch.ones(()))
'''


@pytest.mark.parametrize("config_first", [True, False], ids=["config-first", "method-first"])
def test_a_method_module_may_import_the_config(tmp_path: Path, config_first: bool) -> None:
    (tmp_path / "echo_method.py").write_text(EXTERNAL_METHOD)
    first, second = ("densessl.config", "echo_method") if config_first else ("echo_method", "densessl.config")
    result = fresh(
        f"""
        import json
        import {first}
        import {second}
        from densessl.config import from_dict
        from densessl.methods import build_method
        import echo_method
        config = from_dict({{"method": {{"name": "echo", "scale": 2.0}}}})
        method = build_method(config.method, lambda: None)
        print(json.dumps([type(method).__name__, method.config.scale, echo_method.DEFAULT_ARCH]))
        """,
        cwd=tmp_path,
    )
    assert result == ["Echo", 2.0, "resnet50"]

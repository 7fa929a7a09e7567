"""The declared pipeline classes load without torch, and the package serves every name it lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import densessl.augment as augment
from densessl.augment import autoaugment, colour, pipeline, spec


def test_reading_a_pipeline_loads_no_torch() -> None:
    code = (
        "import json, sys\n"
        "from densessl.augment import PhotometricChoice, check_pipeline\n"
        "import densessl.augment.spec\n"
        "print(json.dumps([m for m in ('torch', 'torchvision') if m in sys.modules]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_every_listed_name_is_served_from_its_module() -> None:
    homes = (spec, colour, autoaugment, pipeline)
    for name in augment.__all__:
        owners = [m for m in homes if name in getattr(m, "__all__", ()) or name in vars(m)]
        assert owners, name
        assert getattr(augment, name) is getattr(owners[0], name), name
    # the colour module re-exports the colour step it runs
    assert colour.PhotometricConfig is spec.PhotometricConfig is augment.PhotometricConfig
    assert spec.PhotometricConfig() == augment.MOCO_V2

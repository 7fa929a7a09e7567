"""The reproduction ledger: JSON-ready, through a checkpoint and back, a data fingerprint that
follows the file list, every difference named, and git read only where it applies."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from densessl.config import load_config, to_dict
from densessl.data.sources import FolderSource, parse_source
from densessl.training import ledger as ledger_module
from densessl.training.checkpoint import FORMAT, load_checkpoint, save_atomic, state_digest
from densessl.training.ledger import (
    build_ledger,
    compare_ledger,
    data_fingerprint,
    git_state,
    ledger_config,
    ledger_lines,
)
from tests.helpers import QUICK, TINY


@pytest.fixture(scope="module")
def config():
    return load_config(QUICK, TINY)


@pytest.fixture(scope="module")
def ledger(config):
    source = parse_source(config.data.source, length=config.data.synthetic_length)
    return build_ledger(config, source, "cpu", 1)


def write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(folder / name)


def test_the_ledger_round_trips_through_json_and_a_checkpoint(tmp_path, config, ledger):
    assert json.loads(json.dumps(ledger)) == ledger
    state = {"format": FORMAT, "config": to_dict(config), "model": {}, "ledger": ledger}
    state["checksum"] = state_digest(state)
    save_atomic(state, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["ledger"] == ledger
    assert to_dict(ledger_config(loaded["ledger"])) == to_dict(config)
    assert compare_ledger(ledger, loaded["ledger"]) == []


def test_the_ledger_records_environment_run_and_data(ledger, config):
    assert ledger["densessl"]["version"]
    assert {"python", "torch", "torchvision", "timm"} <= set(ledger["versions"])
    assert ledger["device"]["type"] == "cpu" and ledger["world_size"] == 1
    precision = config.train.precision
    assert ledger["precision"] == {
        "configured": precision,
        "resolved": {"auto": "fp32"}.get(precision, precision),
    }
    assert ledger["seeds"] == {"train.seed": config.train.seed}
    assert ledger["data"] == {
        "source": config.data.source,
        "images": 48,
        "kind": "synthetic",
        "preset": config.data.source.partition(":")[2] or "medium",
        "split": "train",
        "length": 48,
    }
    lines = "\n".join(ledger_lines(ledger))
    assert f"torch {ledger['versions']['torch']}" in lines and "world size 1" in lines
    assert "train.seed=0" in lines and "48 images" in lines


def test_the_data_fingerprint_follows_the_file_list_not_the_contents(tmp_path):
    root = tmp_path / "images"
    write_images(root, ["a.png", "b.png", "sub/c.png"])

    def fingerprint():
        return data_fingerprint(FolderSource(root), f"folder:{root}")

    first = fingerprint()
    assert first["images"] == 3 and first["kind"] == "files" and len(first["files_sha256"]) == 64
    assert fingerprint() == first
    # contents are not read (a stat or a read per file at every start): a rewrite goes unseen
    Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(root / "a.png")
    assert fingerprint() == first
    write_images(root, ["d.png"])
    added = fingerprint()
    assert added["images"] == 4 and added["files_sha256"] != first["files_sha256"]
    (root / "d.png").rename(root / "e.png")
    renamed = fingerprint()
    assert renamed["images"] == 4 and renamed["files_sha256"] != added["files_sha256"]
    # the hash is of paths relative to the root: the same files elsewhere are the same data
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    assert data_fingerprint(FolderSource(moved))["files_sha256"] == renamed["files_sha256"]


def test_compare_names_every_differing_field(ledger):
    assert compare_ledger(ledger, copy.deepcopy(ledger)) == []
    other = copy.deepcopy(ledger)
    other["created"] = "another day"  # differs between any two runs: not a difference
    other["versions"]["torch"] = "0.0.1"
    other["versions"]["timm"] = None
    other["densessl"].update(commit="f" * 40, dirty=not ledger["densessl"].get("dirty"))
    other["device"] = {"type": "cuda", "name": "NVIDIA H100"}
    other["world_size"] = 8
    other["precision"]["resolved"] = "fp16"
    other["seeds"]["train.seed"] = 5
    other["data"].update(images=12, files_sha256="0" * 64)
    other["config"]["train"]["epochs"] = 99
    lines = compare_ledger(ledger, other)
    expected = [
        f"torch version: {ledger['versions']['torch']} recorded, 0.0.1 here",
        f"timm version: {ledger['versions']['timm']} recorded, (none) here",
        "densessl git commit:",
        "densessl uncommitted changes:",
        "device: cpu recorded, cuda here",
        "device name:",
        "world size (processes): 1 recorded, 8 here",
        f"precision (resolved): {ledger['precision']['resolved']} recorded, fp16 here",
        "seeds.train.seed: 0 recorded, 5 here",
        "data image count: 48 recorded, 12 here",
        "data file list (SHA-256 of the relative paths): (none) recorded, 000000000000 here",
        f"config train.epochs: {ledger['config']['train']['epochs']} recorded, 99 here",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert len(lines) == len(expected)
    # a side whose data was not read says nothing about the data
    no_data = {k: v for k, v in ledger.items() if k != "data"}
    assert compare_ledger(ledger, no_data) == []


def test_git_state_only_for_the_checkout_that_holds_the_package(tmp_path, monkeypatch):
    here = git_state()
    if here:  # the tests run from a checkout
        assert len(here["commit"]) == 40 and isinstance(here["dirty"], bool)
    package = tmp_path / "project" / "densessl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert git_state(package) == {}  # not a checkout: nothing, and no error
    # installed into an environment inside another project's repository: not that repository
    installed = tmp_path / "project" / "venv" / "site-packages" / "densessl"
    installed.mkdir(parents=True)

    def git(*args):
        subprocess.run(["git", "-C", str(package.parent), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    clean = git_state(package)
    assert git_state(installed) == {}
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (package.parent / "notes.txt").write_text("outside the package")
    assert git_state(package)["dirty"] is False
    (package / "__init__.py").write_text("x = 1\n")
    assert git_state(package) == {"commit": clean["commit"], "dirty": True}

    def hung(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], ledger_module.GIT_TIMEOUT_S)

    monkeypatch.setattr(ledger_module.subprocess, "run", hung)
    assert git_state(package) == {}


def test_importing_the_ledger_leaves_torch_unloaded():
    code = "import sys, densessl.training.ledger; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0

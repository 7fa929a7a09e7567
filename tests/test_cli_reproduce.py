"""The ledger on the command line: ``pretrain --reproduce`` rebuilds the recorded config and warns
about each difference, ``inspect`` prints the ledger, and exports carry it in their sidecar."""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

from densessl.cli import main
from densessl.config import load_config, to_dict
from densessl.data.sources import parse_source
from densessl.training import trainer as trainer_module
from densessl.training.checkpoint import FORMAT, save_atomic, state_digest
from densessl.training.ledger import build_ledger
from densessl.training.trainer import build_model
from tests.helpers import QUICK, TINY

RUN = [*TINY, "train.epochs=1", "train.precision=fp32"]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def keep_logging():
    """main() configures logging; put the levels back for the tests that follow."""
    names = ["", "densessl", "PIL", "matplotlib", "urllib3"]
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def write_checkpoint(path: Path, overrides: list[str] = (), edit=None, ledger: bool = True) -> dict:
    """A densessl checkpoint of the tiny quick run holding the ledger of this environment (``edit``
    changes the ledger first); returns the ledger."""
    config = load_config(QUICK, [*RUN, *overrides])
    torch.manual_seed(0)
    method = build_model(config)
    record = None
    state = {"format": FORMAT, "method": config.method.name, "config": to_dict(config)}
    state.update(model=method.state_dict(), step=6, epoch=1.0)
    if ledger:
        source = parse_source(config.data.source, length=config.data.synthetic_length)
        record = build_ledger(config, source, "cpu", 1)
        if edit is not None:
            edit(record)
        state["ledger"] = record
    state["checksum"] = state_digest(state)
    save_atomic(state, path)
    return record


def differences(caplog) -> list[str]:
    return [
        r.getMessage().split(": ", 1)[1] for r in caplog.records if r.getMessage().startswith("differs from")
    ]


def test_reproduce_rebuilds_the_same_config_and_warns_about_a_different_torch(
    tmp_path, capsys, caplog, keep_logging
):
    def older_torch(record):
        record["versions"]["torch"] = "1.0.0"

    ckpt = tmp_path / "first" / "checkpoints" / "last.pt"
    ledger = write_checkpoint(ckpt, edit=older_torch)
    out = tmp_path / "again"
    with caplog.at_level("WARNING", logger="densessl"):
        assert main(["pretrain", "--reproduce", str(ckpt), "--out", str(out), "-q"]) == 0
    assert differences(caplog) == [
        f"torch version: 1.0.0 recorded, {importlib.metadata.version('torch')} here"
    ]
    # a new run, with the recorded config: its config.yaml and its checkpoint say the same
    assert last_json(capsys.readouterr().out)["step"] == 6
    assert yaml.safe_load((out / "config.yaml").read_text()) == ledger["config"]
    written = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert written["config"] == ledger["config"]


def test_overrides_apply_on_top_of_the_ledger_and_are_warned(tmp_path, caplog, monkeypatch, keep_logging):
    started = {}

    def fit(self):
        started.update(config=to_dict(self.config), run_dir=self.run_dir)
        return {"step": 0, "total_steps": 0, "interrupted": False, "seconds": 0.0, "checkpoint": None}

    monkeypatch.setattr(trainer_module.Trainer, "fit", fit)
    ckpt = tmp_path / "first" / "checkpoints" / "epoch_0001.pt"
    ledger = write_checkpoint(ckpt)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="densessl"):
        assert main(["pretrain", "train.epochs=3", "--reproduce", str(ckpt), "-q"]) == 0
    assert differences(caplog) == ["config train.epochs: 1 recorded, 3 here"]
    assert started["config"] == {**ledger["config"], "train": {**ledger["config"]["train"], "epochs": 3}}
    # the default run directory is named after the reproduced run
    assert started["run_dir"] == Path("runs/first-reproduce")


def test_a_missing_data_folder_is_one_line_and_a_recipe_is_refused(tmp_path, capsys, keep_logging):
    ckpt = tmp_path / "last.pt"
    # a folder source that existed where the checkpoint was written, and is not here
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8)).save(images / f"{i}.png")
    write_checkpoint(ckpt, [f"data.source=folder:{images}"])
    for item in images.iterdir():
        item.unlink()
    images.rmdir()
    out = tmp_path / "run"
    assert main(["pretrain", "--reproduce", str(ckpt), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"densessl: error: image folder {images} does not exist or is not a directory"]
    assert not out.exists()  # refused before the run directory is made
    assert main(["pretrain", str(QUICK), "--reproduce", str(ckpt), "-q"]) == 2
    assert "give no recipe" in capsys.readouterr().err


def test_inspect_prints_the_ledger(tmp_path, capsys, keep_logging):
    ckpt = tmp_path / "last.pt"
    ledger = write_checkpoint(ckpt)
    assert main(["inspect", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert last_json(out)["ledger"] == ledger
    block = out.split("  ledger:\n", 1)[1]
    assert f"torch {ledger['versions']['torch']}" in block and "world size 1" in block
    assert "seeds: train.seed=0" in block and "48 images" in block
    if ledger["densessl"].get("commit"):
        assert f"commit {ledger['densessl']['commit'][:12]}" in block


def test_exports_carry_the_ledger_in_their_sidecar(tmp_path, capsys, keep_logging):
    ckpt = tmp_path / "last.pt"
    ledger = write_checkpoint(ckpt)
    out = tmp_path / "backbone.pth"
    assert main(["export", str(ckpt), "--out", str(out), "--to", "torchvision", "-q"]) == 0
    assert json.loads(Path(f"{out}.json").read_text())["ledger"] == ledger
    tensors = tmp_path / "backbone.safetensors"
    assert main(["export", str(ckpt), "--out", str(tensors), "--to", "safetensors", "-q"]) == 0
    with safe_open(str(tensors), framework="pt") as f:
        assert json.loads(f.metadata()["densessl"])["ledger"] == ledger
    capsys.readouterr()
    # an exported file shows the ledger of the checkpoint it came from, and passes it on
    assert main(["inspect", str(out)]) == 0
    assert last_json(capsys.readouterr().out)["ledger"] == ledger
    again = tmp_path / "again.pth"
    assert main(["export", str(tensors), "--out", str(again), "--to", "timm", "-q"]) == 0
    assert json.loads(Path(f"{again}.json").read_text())["ledger"] == ledger


def test_a_checkpoint_without_a_ledger_exports_and_inspects_without_one(tmp_path, capsys, keep_logging):
    ckpt = tmp_path / "old.pt"
    write_checkpoint(ckpt, ledger=False)
    out = tmp_path / "backbone.pth"
    assert main(["export", str(ckpt), "--out", str(out), "-q"]) == 0
    assert "ledger" not in json.loads(Path(f"{out}.json").read_text())
    assert main(["inspect", str(ckpt)]) == 0
    printed = capsys.readouterr().out
    assert "ledger" not in last_json(printed) and "  ledger:" not in printed

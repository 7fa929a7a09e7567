"""Recipes load, overrides apply, and mistakes stop with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from densessl.cli import main
from densessl.config import ConfigError, load_config, save_config

ROOT = Path(__file__).resolve().parent.parent
# densessl recipes; configs/transfer holds other frameworks' configs
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "transfer" not in p.parts)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_recipe_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_seed_recipe_values():
    densecl = load_config(ROOT / "configs/densecl/coco_r50_800ep.yaml")
    assert densecl.method.name == "densecl"
    assert (densecl.optim.lr, densecl.train.epochs, densecl.train.batch_size) == (0.3, 800, 256)
    assert (densecl.method.loss_lambda, densecl.method.temperature, densecl.method.queue_size) == (
        0.5,
        0.2,
        65536,
    )
    assert densecl.optim.schedule_unit == "epoch" and densecl.optim.warmup_epochs == 0
    assert densecl.data.source.startswith("coco:")
    imagenet = load_config(ROOT / "configs/densecl/imagenet_r50_200ep.yaml")
    assert (imagenet.optim.lr, imagenet.train.epochs) == (0.03, 200)


def test_overrides_apply_to_nested_keys_lists_and_all_views():
    config = load_config(
        ROOT / "configs/densecl/coco_r50_800ep.yaml",
        [
            "train.epochs=3",
            "views.*.crop.size=64",
            "views.1.photometric.solarize_p=0.2",
            "optim.clip_grad=3.0",
            "views.0.crop.scale=[0.5, 1.0]",
        ],
    )
    assert config.train.epochs == 3
    assert [v.crop.size for v in config.views] == [64, 64]
    assert config.views[1].photometric.solarize_p == 0.2 and config.views[0].photometric.solarize_p == 0.0
    assert config.optim.clip_grad == 3.0
    assert config.views[0].crop.scale == (0.5, 1.0)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epoch=3", "unknown key 'train.epoch' in train; valid keys: epochs, batch_size"),
        ("method.lamda=0.3", "unknown key 'method.lamda' in method; valid keys: name, dim"),
        ("optim.name=adam", "optim.name: invalid value 'adam'; valid choices: sgd, lars, adamw"),
        ("train.epochs=many", "train.epochs must be an integer, got 'many'"),
        ("method.name=simclr", "invalid value 'simclr'; valid choices: densecl, mocov2, slotcon"),
        ("views.5.crop.size=3", "not an index of a list of 2 items"),
        ("trainepochs", "must look like key.sub=value"),
    ],
)
def test_bad_keys_and_values_name_the_key_and_the_choices(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs/densecl/coco_r50_800ep.yaml", [override])
    assert expected in str(info.value)


def test_cli_reports_a_bad_key_in_one_line(capsys):
    code = main(["pretrain", str(ROOT / "configs/quick/densecl_synthetic.yaml"), "train.epoch=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "unknown key 'train.epoch'" in err and "valid keys:" in err


def test_missing_config_file(capsys):
    assert main(["pretrain", "no/such/file.yaml"]) == 2
    assert "config file not found: no/such/file.yaml" in capsys.readouterr().err

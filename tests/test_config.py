"""Recipes load (by path or by name, with their bases), overrides apply, every value is range-checked,
and mistakes stop with one clear line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from densessl.cli import main
from densessl.config import ConfigError, find_config, from_dict, load_config, save_config
from densessl.recipes import recipe_dir, recipe_names, recipe_path

ROOT = Path(__file__).resolve().parent.parent
RECIPE_DIR = ROOT / "densessl" / "recipes"
RECIPES = recipe_names()
# every recipe resolved (to_dict) before the recipes moved into the package and started to inherit
# from one another; resolving them today must give exactly these values
RESOLVED_BEFORE = json.loads((Path(__file__).parent / "fixtures" / "recipes_resolved.json").read_text())


def test_the_recipes_ship_inside_the_package():
    assert recipe_dir() == RECIPE_DIR
    # recipes added since the capture come on top
    assert set(RESOLVED_BEFORE) <= set(RECIPES)
    # configs/ keeps only other frameworks' configs (transfer), which are not densessl recipes
    assert [p.name for p in (ROOT / "configs").iterdir() if p.is_dir()] == ["transfer"]


def test_a_built_wheel_carries_every_recipe(tmp_path):
    """A non-editable install sees only what the wheel holds: build one from a copy of the sources."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "densessl", src / "densessl", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist")],
        check=True,
        cwd=src,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("densessl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"densessl/recipes/{r}.yaml" for r in RECIPES} <= names
    assert "densessl/recipes/quick/densecl_synthetic.yaml" in names


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads_and_round_trips(name, tmp_path):
    config = load_config(name)
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


@pytest.mark.parametrize("name", sorted(RESOLVED_BEFORE))
def test_recipes_resolve_exactly_as_before_they_inherited(name):
    # from_dict gives fields added since the capture their defaults on both sides
    assert load_config(name) == from_dict(RESOLVED_BEFORE[name])


def test_slotcon_recipes_state_only_what_differs_from_their_base():
    texts = {n: (RECIPE_DIR / f"{n}.yaml").read_text() for n in RECIPES if n.startswith("slotcon/")}
    assert "base:" not in texts["slotcon/coco_r50_800ep"]
    for name in ("slotcon/cocoplus_r50_800ep", "slotcon/imagenet_r50_100ep", "slotcon/imagenet_r50_200ep"):
        assert "base: slotcon/" in texts[name]
        assert "views:" not in texts[name] and "optim:" not in texts[name]


def test_a_recipe_is_found_by_name_with_or_without_suffix_or_by_path():
    path = RECIPE_DIR / "densecl/coco_r50_800ep.yaml"
    assert find_config("densecl/coco_r50_800ep") == path
    assert find_config("densecl/coco_r50_800ep.yaml") == path
    assert find_config(path) == path
    assert recipe_path("../pyproject") is None
    assert load_config("densecl/coco_r50_800ep") == load_config(path)


def test_an_unknown_recipe_name_suggests_the_closest():
    with pytest.raises(ConfigError) as info:
        load_config("densecl/coco_r50_80ep")
    assert "did you mean 'densecl/coco_r50_800ep'?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config("configs/slotcon/coco_r50_800ep.yaml")
    assert "use 'slotcon/coco_r50_800ep'" in str(info.value)


def test_base_merges_mappings_deeply_and_replaces_lists(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "base: quick/densecl_synthetic\n"
        "train: {epochs: 3}\n"
        "views:\n"
        "  - crop: {size: 32}\n"
        "  - crop: {size: 32}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/child.yaml").write_text("base: ../parent.yaml\nmethod: {queue_size: 64}\n")
    config = load_config(tmp_path / "sub/child.yaml", ["train.batch_size=16"])
    quick = load_config("quick/densecl_synthetic")
    assert config.train.epochs == 3 and config.train.batch_size == 16
    assert config.train.seed == quick.train.seed and config.train.precision == quick.train.precision
    assert config.method.queue_size == 64 and config.method.hidden_dim == quick.method.hidden_dim
    assert config.model == quick.model
    # a list is replaced as a whole: the views' other keys are back to their defaults
    assert [v.crop.size for v in config.views] == [32, 32]
    assert config.views[0].crop.scale == (0.2, 1.0) != quick.views[0].crop.scale


def test_a_relative_base_wins_over_a_recipe_of_the_same_name(tmp_path):
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick/densecl_synthetic.yaml").write_text(
        "base: mocov2/coco_r50_800ep\ntrain: {epochs: 7}\n"
    )
    (tmp_path / "child.yaml").write_text("base: quick/densecl_synthetic\n")
    config = load_config(tmp_path / "child.yaml")
    assert (config.method.name, config.train.epochs) == ("mocov2", 7)


def test_base_cycles_and_missing_bases_are_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: c\n")
    (tmp_path / "c.yaml").write_text("base: a.yaml\ntrain: {epochs: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.yaml")
    assert "cycle" in str(info.value) and "a.yaml" in str(info.value) and "c.yaml" in str(info.value)
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")
    (tmp_path / "d.yaml").write_text("base: slotcon/coco_r50_80ep\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "d.yaml")
    assert "did you mean 'slotcon/coco_r50_800ep'?" in str(info.value)


def test_seed_recipe_values():
    densecl = load_config("densecl/coco_r50_800ep")
    assert densecl.method.name == "densecl"
    assert (densecl.optim.lr, densecl.train.epochs, densecl.train.batch_size) == (0.3, 800, 256)
    assert (densecl.method.loss_lambda, densecl.method.temperature, densecl.method.queue_size) == (
        0.5,
        0.2,
        65536,
    )
    assert densecl.optim.schedule_unit == "epoch" and densecl.optim.warmup_epochs == 0
    assert densecl.data.source.startswith("coco:")
    imagenet = load_config("densecl/imagenet_r50_200ep")
    assert (imagenet.optim.lr, imagenet.train.epochs) == (0.03, 200)


def test_overrides_apply_to_nested_keys_lists_and_all_views():
    config = load_config(
        "densecl/coco_r50_800ep",
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


def test_an_override_of_one_aliased_view_leaves_the_others():
    # the revisited MoCo's recipe writes its query's pipeline once and its small crops as aliases
    recipe = "quick/revisited_moco_synthetic"
    assert load_config(recipe).views[2].photometric.p == (0.5, 0.5)
    config = load_config(recipe, ["views.0.photometric.p=[0.0, 1.0]", "views.3.crop.size=32"])
    assert config.views[0].photometric.p == (0.0, 1.0)
    assert [v.photometric.p for v in config.views[2:]] == [(0.5, 0.5)] * 4
    assert [v.crop.size for v in config.views] == [40, 40, 24, 32, 24, 24]


def test_an_alias_inside_its_own_anchor_is_a_config_error(tmp_path: Path):
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("views: &loop\n  - *loop\n")
    with pytest.raises(ConfigError, match="alias is used inside its own anchor"):
        load_config(recipe)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "train.epoch=3",
            "unknown key 'train.epoch' in train (did you mean 'epochs'?); valid keys: epochs, batch_size",
        ),
        (
            "method.lamda=0.3",
            "unknown key 'method.lamda' in method (did you mean 'loss_lambda'?); valid keys",
        ),
        ("method.xyz=0.3", "unknown key 'method.xyz' in method; valid keys: name, dim"),
        ("optim.name=adam", "optim.name: invalid value 'adam' (did you mean 'adamw'?); valid choices: sgd"),
        ("optim.schedule=cosin", "invalid value 'cosin' (did you mean 'cosine'?)"),
        ("method.name=densecll", "invalid value 'densecll' (did you mean 'densecl'?)"),
        ("train.epochs=many", "train.epochs must be an integer, got 'many'"),
        (
            "method.name=simclr",
            "invalid value 'simclr'; valid choices: densecl, mgc, mocov2, revisited_moco, slotcon",
        ),
        ("views.5.crop.size=3", "not an index of a list of 2 items"),
        ("trainepochs", "must look like key.sub=value"),
    ],
)
def test_bad_keys_and_values_name_the_key_and_the_choices(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config("densecl/coco_r50_800ep", [override])
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
        ("train.batch_size=-8", "train.batch_size must be an integer >= 1, got -8"),
        ("data.workers=-1", "data.workers must be an integer >= 0, got -1"),
        ("train.log_every=0", "train.log_every must be an integer >= 1, got 0"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be an integer >= 1, got 0"),
        ("train.checkpoint_every_steps=-1", "train.checkpoint_every_steps must be an integer >= 0"),
        ("train.max_steps=-5", "train.max_steps must be an integer >= 0, got -5"),
        ("data.synthetic_length=0", "data.synthetic_length must be an integer >= 1"),
        ("data.max_skipped_fraction=1.0", "data.max_skipped_fraction must be a number in [0, 1), got 1.0"),
        ("data.max_skipped_fraction=-0.1", "data.max_skipped_fraction must be a number in [0, 1)"),
        ("views.1.crop.size=0", "views.1.crop.size must be an integer >= 1, got 0"),
        ("views.0.crop.scale=[0.0, 1.0]", "views.0.crop.scale.0 must be a number in (0, 1], got 0.0"),
        ("views.0.crop.scale=[0.2, 1.5]", "views.0.crop.scale.1 must be a number in (0, 1], got 1.5"),
        ("views.0.crop.scale=[0.8, 0.2]", "views.0.crop.scale must be [min, max] with min <= max"),
        ("views.0.crop.ratio=[-1, 2]", "views.0.crop.ratio.0 must be a number > 0"),
        ("views.0.crop.flip_p=2", "views.0.crop.flip_p must be a number in [0, 1], got 2.0"),
        ("views.0.crop.tries=0", "views.0.crop.tries must be an integer >= 1"),
        ("views.1.photometric.solarize_p=1.2", "views.1.photometric.solarize_p must be a number in [0, 1]"),
        ("views.0.photometric.hue=0.7", "views.0.photometric.hue must be a number in [0, 0.5]"),
        ("views.0.photometric.blur_sigma=[0, 2]", "views.0.photometric.blur_sigma.0 must be a number > 0"),
        ("optim.lr=0", "optim.lr must be a number > 0, got 0.0"),
        ("optim.lr=-1e-3", "optim.lr must be a number > 0, got -0.001"),
        ("optim.lr=.nan", "optim.lr must be a finite number"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay must be a number >= 0"),
        ("optim.momentum=1.5", "optim.momentum must be a number in [0, 1], got 1.5"),
        ("optim.betas=[0.9, 1.0]", "optim.betas.1 must be a number in [0, 1)"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs must be a number >= 0, got -1.0"),
        ("optim.milestones=[0, 300]", "optim.milestones.0 must be an integer >= 1, got 0"),
        ("optim.clip_grad=0", "optim.clip_grad must be a number > 0"),
        ("optim.milestones=[600, 300]", "optim.milestones must be in increasing order"),
        ("method.temperature=0", "method.temperature must be a number > 0, got 0.0"),
        ("method.momentum=1.01", "method.momentum must be a number in [0, 1], got 1.01"),
        ("method.queue_size=0", "method.queue_size must be an integer >= 1, got 0"),
        ("method.loss_lambda=2", "method.loss_lambda must be a number in [0, 1]"),
        ("method.shuffle_bn_groups=0", "method.shuffle_bn_groups must be an integer >= 1"),
        ("model.width=0", "model.width must be a number > 0"),
        ("model.drop_path_rate=1", "model.drop_path_rate must be a number in [0, 1)"),
    ],
)
def test_every_value_is_range_checked_at_start_up(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config("densecl/coco_r50_800ep", [override])
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("method.teacher_temp=-0.1", "method.teacher_temp must be a number > 0"),
        ("method.student_temp=0", "method.student_temp must be a number > 0"),
        ("method.slot_temp=0", "method.slot_temp must be a number > 0"),
        ("method.teacher_momentum=1.2", "method.teacher_momentum must be a number in [0, 1]"),
        ("method.center_momentum=-0.5", "method.center_momentum must be a number in [0, 1]"),
        ("method.group_loss_weight=1.5", "method.group_loss_weight must be a number in [0, 1]"),
        ("method.num_prototypes=0", "method.num_prototypes must be an integer >= 1"),
        ("method.hidden_dim=0", "method.hidden_dim must be an integer >= 1"),
        ("views.1.crop.threshold=1.5", "views.1.crop.threshold must be a number in [0, 1]"),
        ("views.1.crop.reference=1", "views.1.crop.reference must name an earlier view"),
    ],
)
def test_slotcon_values_are_range_checked_by_their_names(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config("slotcon/coco_r50_800ep", [override])
    assert expected in str(info.value)


def test_the_skip_budget_defaults_to_a_tenth():
    assert load_config("quick/densecl_synthetic").data.max_skipped_fraction == 0.1
    config = load_config("quick/densecl_synthetic", ["data.max_skipped_fraction=0"])
    assert config.data.max_skipped_fraction == 0.0


def test_cli_reports_a_bad_key_in_one_line(capsys):
    code = main(["pretrain", "quick/densecl_synthetic", "train.epoch=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "unknown key 'train.epoch'" in err and "valid keys:" in err


def test_missing_config_file(capsys):
    assert main(["pretrain", "no/such/file.yaml"]) == 2
    assert "config file not found: no/such/file.yaml" in capsys.readouterr().err

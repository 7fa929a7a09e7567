"""Size-aware defaults: the recipe chosen for a dataset size and a machine, without data or GPU."""

from __future__ import annotations

import pytest
import yaml

from densessl.autorecipe import GIB, build_config, choose_recipe, recipe_text
from densessl.config import ConfigError, from_dict, load_config


def config_for(method: str, n: int, kind: str, memory: int, cores: int):
    return build_config(choose_recipe(method, n, kind, memory, cores), "folder:/data/photos")


@pytest.mark.parametrize("method", ["densecl", "mocov2", "slotcon"])
@pytest.mark.parametrize(
    ("n", "kind", "memory", "cores"),
    [
        (40, "cpu", 4 * GIB, 2),
        (300, "cpu", 8 * GIB, 2),
        (3000, "cpu", 16 * GIB, 8),
        (50_000, "cpu", 64 * GIB, 16),
        (2000, "cuda", 16 * GIB, 8),
        (120_000, "cuda", 80 * GIB, 16),
        (120_000, "cuda", 6 * GIB, 8),
    ],
)
def test_every_choice_is_a_valid_config_within_the_rules(method, n, kind, memory, cores):
    choice = choose_recipe(method, n, kind, memory, cores)
    config = build_config(choice, "folder:/data/photos")
    assert config.method.name == method and config.data.source == "folder:/data/photos"
    batch = config.train.batch_size
    assert batch & (batch - 1) == 0 and 8 <= batch <= n
    assert n // batch >= 1
    if hasattr(config.method, "queue_size"):
        assert config.method.queue_size <= n / 4
    steps = (n // batch) * config.train.epochs
    target = 2000 if kind == "cpu" else 20000
    assert steps >= target or config.train.epochs == 800
    assert config.optim.warmup_epochs <= 0.05 * config.train.epochs + 1e-9 or config.optim.warmup_epochs == 0
    assert len(choice.reasons) == len(choice.overrides) + 1  # one line per choice, plus the recipe


def test_a_small_folder_on_a_cpu_gets_the_small_network_a_short_queue_and_a_step_target():
    choice = choose_recipe("densecl", 300, "cpu", 8 * GIB, 2)
    config = build_config(choice, "folder:/x")
    assert choice.base == "quick/densecl_synthetic"
    assert (config.model.arch, config.model.small_input, config.model.width) == ("resnet18", True, 0.25)
    assert [v.crop.size for v in config.views] == [64, 64]
    assert config.method.queue_size == 64  # a power of two, at most 300 / 4
    assert config.train.batch_size == 32  # 300 images: at least 8 steps per epoch
    assert config.optim.lr == pytest.approx(0.1 * 32 / 128)  # the quick recipe's lr, scaled
    assert config.train.epochs == 223  # 9 steps per epoch, 2000 steps at least
    assert config.data.workers == 1
    assert any(
        r.startswith("method.queue_size = 64: at most a quarter of the 300 images") for r in choice.reasons
    )


def test_a_large_set_on_a_large_gpu_gets_the_published_resnet50_recipe():
    choice = choose_recipe("slotcon", 118_000, "cuda", 80 * GIB, 16)
    config = build_config(choice, "coco:/data/coco")
    published = load_config("slotcon/coco_r50_800ep")
    assert choice.base == "slotcon/coco_r50_800ep"
    assert config.model == published.model and config.views == published.views
    assert config.train.batch_size <= published.train.batch_size
    assert config.optim.lr == pytest.approx(published.optim.lr * config.train.batch_size / 512)
    assert config.data.workers == 8
    assert "model.width" not in choice.overrides


def test_memory_bounds_the_batch():
    small = build_config(choose_recipe("densecl", 200_000, "cuda", 8 * GIB, 8), "folder:/x")
    large = build_config(choose_recipe("densecl", 200_000, "cuda", 80 * GIB, 8), "folder:/x")
    assert small.train.batch_size < large.train.batch_size <= 256


def test_a_small_gpu_or_a_small_set_keeps_the_small_network():
    assert choose_recipe("mocov2", 200_000, "cuda", 4 * GIB, 8).base == "quick/mocov2_synthetic"
    assert choose_recipe("mocov2", 1000, "cuda", 80 * GIB, 8).base == "quick/mocov2_synthetic"
    config = config_for("mocov2", 1000, "cuda", 80 * GIB, 8)
    assert config.model.width == 1.0 and config.views[0].crop.size == 96


def test_slotcon_prototypes_shrink_with_the_data():
    config = config_for("slotcon", 40, "cpu", 4 * GIB, 2)
    assert config.method.num_prototypes == 8  # one per 4 images at most, a power of two


def test_refusals_are_one_line():
    with pytest.raises(ConfigError, match="too few"):
        choose_recipe("densecl", 10, "cpu", GIB, 2)
    with pytest.raises(ConfigError, match="no size-aware defaults"):
        choose_recipe("mgc", 1000, "cpu", GIB, 2)


def test_the_recipe_file_loads_back_to_the_same_config_and_says_why(tmp_path):
    choice = choose_recipe("densecl", 300, "cpu", 8 * GIB, 2)
    config = build_config(choice, "folder:/x", ["train.seed=3"])
    text = recipe_text(config, choice, 300)
    assert "# starting from the recipe quick/densecl_synthetic" in text
    assert "#   train.batch_size = 32: at least 8 steps per epoch" in text
    (tmp_path / "recipe.yaml").write_text(text)
    assert load_config(tmp_path / "recipe.yaml") == config == from_dict(yaml.safe_load(text))
    assert config.train.seed == 3

"""The main job, shrunk: pre-train, probe against the exact random initialisation, summarise."""

from __future__ import annotations

import json

import pytest
import torch

from densessl.cli import main
from densessl.config import ConfigError, ModelConfig
from densessl.data.synthetic import SyntheticScenes, resolve_config
from densessl.demo import format_table, probe_on_scenes, quick_config_path, run_demo
from densessl.eval.segmentation import run_linear_probe
from densessl.export import load_backbone
from densessl.recipes import recipe_dir
from tests.helpers import METHOD_TINY, QUICK_TINY


@pytest.mark.parametrize("method", ["densecl", "slotcon", "mgc", "revisited_moco"])
def test_demo_pretrains_probes_both_backbones_and_resumes(tmp_path, method):
    kwargs = {"probe_train": 8, "probe_test": 4, "probe_seeds": (0,), "probe_epochs": 1}
    summary = run_demo(tmp_path, method, [*QUICK_TINY, *METHOD_TINY[method]], **kwargs)
    assert [r["method"] for r in summary["results"]] == [method, "random init"]
    assert summary["pretrain_steps"] == 4
    assert summary["gain_miou"] == pytest.approx(
        summary["results"][0]["miou"] - summary["results"][1]["miou"]
    )
    assert json.loads((tmp_path / "summary.json").read_text())["method"] == method
    assert "gain over random init" in format_table(summary)
    again = run_demo(tmp_path, method, [*QUICK_TINY, *METHOD_TINY[method]], **kwargs)
    assert again["pretrain_steps"] == 4  # resumed the finished run instead of training again
    assert again["results"][1]["miou"] == pytest.approx(summary["results"][1]["miou"])


def test_demo_of_a_method_without_a_quick_recipe_is_one_line(capsys):
    assert main(["demo", "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope' (choose from densecl, mgc, mocov2, revisited_moco, slotcon)" in err
    assert main(["demo", "--method", "slotcn"]) == 2
    assert "did you mean 'slotcon'?" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no quick recipe for 'densecll' \\(did you mean 'densecl'\\?\\)"):
        quick_config_path("densecll")


def test_the_quick_recipes_come_from_the_package():
    assert quick_config_path("slotcon") == recipe_dir() / "quick" / "slotcon_synthetic.yaml"


def test_the_probe_logs_each_seed_and_scores_as_the_library_probe_does(caplog):
    scenes = resolve_config("easy")
    torch.manual_seed(0)
    backbone = load_backbone("random", ModelConfig(arch="resnet18", small_input=True, width=0.125))
    with caplog.at_level("INFO", logger="densessl.demo"):
        row = probe_on_scenes(backbone, scenes, 8, 4, (0, 1), 1, "cpu", name="random init")
    lines = [r.getMessage() for r in caplog.records if r.name == "densessl.demo"]
    assert lines[0] == "probing random init: features of 8 + 4 held-out scenes"
    assert lines[1].startswith("probing random init: seed 0 (1/2): mIoU ")
    assert lines[2].startswith("probing random init: seed 1 (2/2): mIoU ")
    assert lines[3].startswith("probing random init: done in ")
    reference = run_linear_probe(
        backbone,
        SyntheticScenes(scenes, "val", 8),
        SyntheticScenes(scenes, "test", 4),
        scenes.num_classes + 1,
        image_size=scenes.image_size,
        seeds=(0, 1),
        epochs=1,
        lr=0.1,
        batch_size=64,
        train_resolution=scenes.image_size // 2,
        device="cpu",
    )
    assert row["miou_per_seed"] == pytest.approx([100 * m for m in reference["miou_per_seed"]])
    assert row["miou"] == pytest.approx(100 * reference["miou"])
    assert row["miou_std"] == pytest.approx(100 * reference["miou_std"])
    assert row["pixel_acc"] == pytest.approx(100 * reference["pixel_acc"])


def test_the_random_floor_is_the_exported_backbone_as_pre_training_starts_it(tmp_path):
    """MGC re-draws its Linear layers after copying the momentum ViT: a freshly built ViT is not
    where pre-training starts. Its first step has lr 0 (warm-up from 0), so the checkpoint after
    one step still holds the initial online ViT."""
    from densessl.config import load_config
    from densessl.demo import initial_backbone
    from densessl.training.trainer import Trainer

    overrides = [*QUICK_TINY, *METHOD_TINY["mgc"], "train.max_steps=1"]
    config = load_config(quick_config_path("mgc"), overrides)
    result = Trainer(config, tmp_path / "run").fit()
    started = load_backbone(result["checkpoint"]).state_dict()
    floor = initial_backbone(config).state_dict()
    assert set(floor) == set(started)
    for key, value in started.items():
        assert torch.equal(floor[key], value), key
    fresh = load_backbone("random", config.model).state_dict()
    assert not torch.equal(fresh["blocks.0.attn.qkv.weight"], floor["blocks.0.attn.qkv.weight"])

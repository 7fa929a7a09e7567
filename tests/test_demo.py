"""The main job, shrunk: pre-train, probe against the exact random initialisation, summarise."""

from __future__ import annotations

import json

import pytest

from densessl.cli import main
from densessl.demo import format_table, run_demo

TINY = [
    "data.synthetic_length=32",
    "data.workers=0",
    "train.batch_size=8",
    "train.epochs=1",
    "train.tensorboard=false",
    "train.progress=false",
    "views.*.crop.size=32",
    "model.width=0.125",
]
METHOD_TINY = {
    "densecl": ["method.queue_size=16"],
    "slotcon": ["method.num_prototypes=8", "method.hidden_dim=16"],
}


@pytest.mark.parametrize("method", ["densecl", "slotcon"])
def test_demo_pretrains_probes_both_backbones_and_resumes(tmp_path, method):
    kwargs = {"probe_train": 8, "probe_test": 4, "probe_seeds": (0,), "probe_epochs": 1}
    summary = run_demo(tmp_path, method, [*TINY, *METHOD_TINY[method]], **kwargs)
    assert [r["method"] for r in summary["results"]] == [method, "random init"]
    assert summary["pretrain_steps"] == 4
    assert summary["gain_miou"] == pytest.approx(
        summary["results"][0]["miou"] - summary["results"][1]["miou"]
    )
    assert json.loads((tmp_path / "summary.json").read_text())["method"] == method
    assert "gain over random init" in format_table(summary)
    again = run_demo(tmp_path, method, [*TINY, *METHOD_TINY[method]], **kwargs)
    assert again["pretrain_steps"] == 4  # resumed the finished run instead of training again
    assert again["results"][1]["miou"] == pytest.approx(summary["results"][1]["miou"])


def test_demo_of_a_method_without_a_quick_recipe_is_one_line(capsys):
    assert main(["demo", "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no quick recipe for 'nope'" in err and "densecl" in err

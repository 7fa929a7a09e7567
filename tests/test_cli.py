"""The command line on tiny data: synthetic VOC on disk, a probe reading it, JSON output."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from densessl import __version__
from densessl.cli import main, parse_args, pretrain_summary_lines
from densessl.config import load_config
from densessl.data.voc import VOCSegmentation
from tests.helpers import QUICK_TINY


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_synth_then_seg_probe_on_the_voc_layout(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "voc"), "--train", "12", "--val", "6"]) == 0
    root = Path(last_json(capsys.readouterr().out)["voc_root"])
    assert (root / "ImageSets/Segmentation/train.txt").read_text().split() == [
        f"train_{i:06d}" for i in range(12)
    ]
    assert len(VOCSegmentation(root, "val")) == 6
    code = main(
        [
            "eval",
            "seg-probe",
            "--weights",
            "random",
            "--arch",
            "resnet18",
            "--small-input",
            "--width",
            "0.25",
            "--data",
            f"voc:{tmp_path / 'voc'}",
            "--image-size",
            "64",
            "--epochs",
            "2",
            "--seeds",
            "0",
            "1",
        ]
    )
    result = last_json(capsys.readouterr().out)
    assert code == 0
    assert result["protocol"] == "seg-probe" and len(result["miou_per_seed"]) == 2
    assert result["unit"] == "percent" and 0.0 <= result["miou"] <= 100.0 and result["num_classes"] == 9
    assert result["miou"] == pytest.approx(sum(result["miou_per_seed"]) / 2)


def test_eval_needs_an_architecture_for_random_weights(capsys):
    code = main(["eval", "seg-probe", "--weights", "random", "--data", "synthetic"])
    assert code == 2 and "--arch" in capsys.readouterr().err


def test_missing_weights_file_is_one_line(capsys):
    code = main(["eval", "seg-probe", "--weights", "nope.pth", "--data", "synthetic"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "densessl: error: weights not found: nope.pth"


def test_bad_data_spec(capsys):
    code = main(["eval", "seg-probe", "--weights", "random", "--arch", "resnet18", "--data", "imagenet:/x"])
    assert code == 2 and "voc:ROOT or synthetic" in capsys.readouterr().err


# --- the command line a newcomer expects -------------------------------------------------------

TINY = [*QUICK_TINY, "method.queue_size=16"]


@pytest.fixture
def keep_logging():
    """main() configures logging; put the levels back for the tests that follow."""
    names = ["", "densessl", "PIL", "matplotlib", "urllib3"]
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"densessl {__version__}"


def test_overrides_may_stand_anywhere_on_the_line():
    words = "pretrain quick/densecl_synthetic a.b=1 --out x train.epochs=2 --resume auto c=3"
    args = parse_args(words.split())
    assert (args.config, args.out, args.resume) == ("quick/densecl_synthetic", "x", "auto")
    assert args.overrides == ["a.b=1", "train.epochs=2", "c=3"]
    args = parse_args(["demo", "--out", "d", "train.epochs=1", "--method", "slotcon", "data.workers=0"])
    assert args.overrides == ["train.epochs=1", "data.workers=0"] and args.method == "slotcon"


def test_a_stray_option_is_still_an_error(capsys):
    assert main(["pretrain", "quick/densecl_synthetic", "--out", "x", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["export", "ckpt.pt", "--out", "b.pth", "train.epochs=2"]) == 2  # export takes no overrides


def test_print_config_shows_the_resolved_config_and_writes_nothing(tmp_path, capsys, keep_logging):
    out = tmp_path / "run"
    argv = ["pretrain", "slotcon/imagenet_r50_200ep", "--out", str(out), "train.epochs=2", "--print-config"]
    code = main(argv)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert code == 0 and not out.exists()
    assert printed["train"]["epochs"] == 2 and printed["method"]["num_prototypes"] == 2048  # base + override
    assert printed["views"][1]["crop"]["reference"] == 0


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbosity_on_every_command_keeps_third_party_debug_quiet(where, keep_logging, capsys):
    argv = ["pretrain", "quick/densecl_synthetic", "--print-config"]
    argv = ["-v", *argv] if where == "before" else [*argv, "-v"]
    assert main(argv) == 0
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    for name in ("PIL", "matplotlib", "urllib3"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
    assert main(["eval", "report", "--help", "-q"]) == 0
    assert main(["data", "synth", "-q", "--help"]) == 0
    assert main(["recipes", "-q"]) == 0
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING


def test_misspelt_sub_commands_and_choices_get_a_suggestion(capsys):
    assert main(["pretrian", "x.yaml"]) == 2
    assert "did you mean 'pretrain'?" in capsys.readouterr().err
    assert main(["eval", "seg-prob", "--weights", "random"]) == 2
    assert "did you mean 'seg-probe'?" in capsys.readouterr().err
    assert main(["export", "c.pt", "--out", "b.pth", "--to", "detectron"]) == 2
    assert "did you mean 'detectron2'?" in capsys.readouterr().err


def test_help_shows_the_defaults(capsys):
    assert main(["data", "synth", "--help"]) == 0
    assert "(default: 1000)" in capsys.readouterr().out
    assert main(["viz", "prototypes", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: protos.png)" in text and "images per prototype (default: 5)" in text
    assert main(["demo", "--help"]) == 0
    assert "{densecl,mgc,mocov2,revisited_moco,slotcon}" in capsys.readouterr().out


def test_recipes_lists_every_shipped_recipe_on_one_line(capsys):
    from densessl.recipes import recipe_names

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["recipe", "method", "backbone", "epochs", "batch"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == recipe_names()
    assert rows["slotcon/imagenet_r50_100ep"][1:] == ["slotcon", "resnet50", "100", "512"]
    assert rows["quick/densecl_synthetic"][-2:] == ["10", "128"] and "width" in lines[8] + "".join(lines)


def test_pretrain_takes_a_recipe_name_and_ends_with_a_summary_then_the_json_line(
    tmp_path, capsys, keep_logging
):
    out = tmp_path / "run"
    assert main(["pretrain", "quick/densecl_synthetic", "--out", str(out), *TINY]) == 0
    captured = capsys.readouterr()
    result = last_json(captured.out)
    assert result["step"] == 4 and result["run_dir"] == str(out)
    err = captured.err
    assert "pre-training finished: 4/4 steps in" in err and "final loss" in err
    assert f"checkpoint: {out / 'checkpoints' / 'last.pt'}" in err
    assert f"densessl export {out / 'checkpoints' / 'last.pt'} --out {out / 'backbone.pth'}" in err
    # the same command again: the run is refused, --overwrite starts over
    assert main(["pretrain", "quick/densecl_synthetic", "--out", str(out), *TINY]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["pretrain", "quick/densecl_synthetic", "--out", str(out), "--overwrite", *TINY]) == 0
    assert last_json(capsys.readouterr().out)["step"] == 4
    both = ["--overwrite", "--resume", "auto"]
    assert main(["pretrain", "quick/densecl_synthetic", "--out", str(out), *both]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_an_interrupted_pretrain_says_how_to_continue(tmp_path, capsys, monkeypatch, keep_logging):
    from densessl.training import trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "fit", interrupted)
    out = tmp_path / "run"
    code = main(["pretrain", "quick/densecl_synthetic", *TINY, "train.max_steps=2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130
    words = ["densessl", "pretrain", "quick/densecl_synthetic", "--out", str(out), "--resume", "auto", *TINY]
    # the step cap is left out: it would stop the continued run at once
    assert f"densessl: continue with: {' '.join(shlex.quote(w) for w in words)}\n" in err


def test_the_summary_lines_of_a_stopped_run():
    summary = {
        "step": 30,
        "total_steps": 100,
        "interrupted": False,
        "seconds": 150.0,
        "checkpoint": "runs/x/checkpoints/last.pt",
        "last_metrics": {"step": 30, "loss": 6.54321},
    }
    lines = pretrain_summary_lines(summary, "densessl pretrain r.yaml --out runs/x --resume auto")
    assert lines[0] == "pre-training stopped: 30/100 steps in 2.5 min, final loss 6.5432 (step 30)"
    assert "  continue: densessl pretrain r.yaml --out runs/x --resume auto" in lines
    export = "densessl export runs/x/checkpoints/last.pt --out runs/x/backbone.pth"
    assert f"  export the backbone: {export}" in lines


def test_size_aware_defaults_from_a_folder(tmp_path, capsys, keep_logging, caplog):
    from PIL import Image

    photos = tmp_path / "photos" / "nested"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        size = (48 + i % 3 * 16, 40 + i % 5 * 8)
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(photos / f"{i}.png")
    out = tmp_path / "run"
    argv = ["pretrain", "--method", "densecl", "--data", f"folder:{tmp_path / 'photos'}", "--out", str(out)]
    with caplog.at_level("INFO", logger="densessl"):
        assert main([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "# chosen by densessl pretrain --method densecl for 40 images" in printed
    config = yaml.safe_load(printed)
    assert config["method"]["queue_size"] <= 10 and config["train"]["batch_size"] == 8
    assert not out.exists()
    fast = ["train.max_steps=1", "data.workers=0", "train.tensorboard=false", "train.progress=false"]
    with caplog.at_level("INFO", logger="densessl"):
        assert main([*argv, *fast]) == 0
    assert "no recipe given: choosing one for 40 images" in caplog.text
    assert "method.queue_size = 8: at most a quarter of the 40 images" in caplog.text
    recipe = out / "recipe.yaml"
    assert recipe.is_file() and load_config(recipe).train.max_steps == 1
    assert last_json(capsys.readouterr().out)["step"] == 1


def test_pretrain_without_a_recipe_or_method_is_one_line(capsys):
    assert main(["pretrain", "--data", "folder:/nowhere"]) == 2
    assert "or --method and --data" in capsys.readouterr().err


def test_eval_report_without_out_writes_into_the_first_run_directory(tmp_path, capsys, monkeypatch):
    runs = []
    for name, miou in (("a", 41.0), ("b", 38.5)):
        run = tmp_path / name
        run.mkdir()
        record = {"protocol": "seg-probe", "data": "voc:/v", "miou": miou, "unit": "percent"}
        (run / "eval.jsonl").write_text(json.dumps(record) + "\n")
        runs.append(str(run))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["eval", "report", *runs]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["table"] == str(tmp_path / "a" / "report.md")
    assert (tmp_path / "a" / "report.md").is_file() and (tmp_path / "a" / "report.png").is_file()
    assert list(work.iterdir()) == []

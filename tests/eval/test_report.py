"""The comparison report: collecting eval results of several runs into a table and a chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from densessl.data.base import DataError
from densessl.eval.report import bar_chart, collect, markdown_table


def write_run(root: Path, name: str, results: list[dict]) -> Path:
    run = root / name
    run.mkdir()
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return run


def test_collect_and_tabulate_headline_figures(tmp_path):
    a = write_run(
        tmp_path,
        "densecl",
        [
            {"protocol": "seg-probe", "data": "synthetic", "miou": 0.1807},
            {"protocol": "knn", "data": "x", "top1": 55.0},
            {"protocol": "seg-probe", "data": "synthetic", "miou": 0.1850},  # repeated: latest wins
        ],
    )
    b = write_run(tmp_path, "random", [{"protocol": "seg-probe", "data": "synthetic", "miou": 0.1219}])
    table = collect([a, b])
    assert table == {
        "densecl": {"seg-probe": pytest.approx(18.5), "knn": 55.0},
        "random": {"seg-probe": pytest.approx(12.19)},
    }
    text = markdown_table(table)
    assert text.splitlines()[0] == "| run | seg-probe | knn |"
    assert "| random | 12.19 | - |" in text and "| densecl | 18.50 | 55.00 |" in text

    chart = bar_chart(table, tmp_path / "report.png")
    picture = Image.open(chart)
    assert picture.size[0] > 100 and picture.size[1] > 200


def test_percent_lines_are_read_as_they_are_and_older_fraction_lines_are_scaled(tmp_path):
    run = write_run(
        tmp_path,
        "r",
        [
            {"protocol": "seg-nn", "data": "a", "unit": "percent", "miou": 31.5},
            {"protocol": "seg-cluster", "data": "a", "miou": 0.2},  # saved before seg-* printed percent
            {"protocol": "davis", "data": "a", "unit": "percent", "J&F-Mean": 40.0},
        ],
    )
    assert collect([run])["r"] == {"seg-nn": 31.5, "seg-cluster": pytest.approx(20.0), "davis": 40.0}


def test_two_datasets_of_one_protocol_get_their_own_columns(tmp_path):
    run = write_run(
        tmp_path,
        "r",
        [
            {"protocol": "seg-nn", "data": "voc:/v", "miou": 0.3},
            {"protocol": "seg-nn", "data": "synthetic", "miou": 0.2},
        ],
    )
    assert set(collect([run])["r"]) == {"seg-nn (voc:/v)", "seg-nn (synthetic)"}


def test_clear_errors_for_a_missing_run_and_a_broken_line(tmp_path):
    with pytest.raises(DataError, match="run directory not found"):
        collect([tmp_path / "nope"])
    run = tmp_path / "bad"
    run.mkdir()
    (run / "eval.jsonl").write_text('{"protocol": "knn", "top1": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"eval.jsonl:2 is not a JSON line"):
        collect([run])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no eval.jsonl or summary.json"):
        collect([tmp_path / "empty"])


def test_eval_save_then_report_from_the_command_line(tmp_path, capsys):
    from densessl.cli import main

    run = tmp_path / "random"
    argv = [
        "eval",
        "seg-probe",
        "--weights",
        "random",
        "--arch",
        "resnet18",
        "--small-input",
        "--width",
        "0.125",
    ]
    argv += ["--data", "synthetic:easy", "--synthetic-train", "8", "--synthetic-val", "4", "--epochs", "1"]
    assert main([*argv, "--seeds", "0", "--save", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert saved == printed and saved["protocol"] == "seg-probe"

    assert main(["eval", "report", str(run), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert saved["unit"] == "percent" and 0 < saved["miou"] <= 100
    assert f"| random | {saved['miou']:.2f} |" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.png").is_file()


def test_variants_of_a_protocol_are_separate_columns(tmp_path):
    run = write_run(
        tmp_path,
        "r",
        [
            {"protocol": "svm-voc07", "variant": "revisited", "data": "v", "map": 40.0},
            {"protocol": "svm-voc07", "variant": "openselfsup", "data": "v", "map": 45.0},
        ],
    )
    assert collect([run])["r"] == {"svm-voc07 revisited": 40.0, "svm-voc07 openselfsup": 45.0}


def test_seg_finetune_reports_its_final_epoch_not_the_best_on_val(tmp_path):
    line = {"protocol": "seg-finetune", "data": "synthetic", "unit": "percent", "miou": 9.24}
    line["best_on_val"] = {"miou": 9.9, "epoch": 4}
    run = write_run(tmp_path, "finetuned", [line])
    assert collect([run]) == {"finetuned": {"seg-finetune": pytest.approx(9.24)}}

"""``densessl bench``: the four phases end to end on a tiny config, the recommendation, the op split."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from densessl.augment import AutoAugmentConfig, PhotometricChoice, PhotometricConfig
from densessl.bench import LOADER_MARGIN, peak_tflops, pipeline_ops, recommend
from densessl.cli import main
from tests.helpers import QUICK, TINY


@pytest.fixture
def restore_process_state():
    """main() configures logging and the bench sets torch's threads: put both back."""
    threads = torch.get_num_threads()
    levels = {n: logging.getLogger(n).level for n in ("", "densessl")}
    yield
    torch.set_num_threads(threads)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_bench_runs_every_phase_and_ends_with_one_json_line(capsys, restore_process_state):
    argv = ["bench", str(QUICK), *TINY, "--steps", "2", "--batches", "1", "--workers", "0", "1", "-q"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("recommended: data.workers=")
    report = json.loads(lines[-1])
    loader = {row["workers"]: row for row in report["loader"]["runs"]}
    assert set(loader) == {0, 1}
    for row in loader.values():
        assert row["images_per_s"] > 0 and row["images_per_s_per_worker"] > 0
    step = report["step"]
    assert step["ms"] > 0 and step["images_per_s"] > 0
    assert step["tflop_per_step"] > 0 and step["achieved_tflops"] > 0
    loop = report["loop"]
    assert loop["steps"] == 2 and loop["images_per_s"] > 0 and 0 <= loop["data_wait_fraction"] <= 1
    ops = report["augment"]["ops"]
    assert [r["op"] for r in ops if r["op"].startswith("view0.")] == [
        "view0.jitter",
        "view0.grayscale",
        "view0.blur",
        "view0.normalize",
    ]
    assert all(r["ms"] > 0 for r in ops) and sum(r["share"] for r in ops) == pytest.approx(1.0)
    assert report["augment"]["ms"] > 0
    rec = report["recommended"]
    assert rec["workers"] in (0, 1) and rec["threads"] >= 1 and rec["images_per_s"] > 0 and rec["reason"]


def test_bench_refuses_bad_counts_in_one_line(capsys, restore_process_state):
    assert main(["bench", str(QUICK), *TINY, "--steps", "0", "-q"]) == 2
    assert "--steps and --batches must be at least 1" in capsys.readouterr().err
    assert main(["bench", str(QUICK), *TINY, "--workers", "-1", "-q"]) == 2
    assert "--workers takes worker counts >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("loader", "step", "cores", "device", "workers", "threads"),
    [
        ({0: 9000.0, 1: 9000.0}, 100.0, 4, "cpu", 0, 2),  # loading in-line costs the step ~1%
        ({0: 300.0, 1: 500.0, 2: 900.0}, 100.0, 2, "cpu", 1, 1),  # in-line loading would cost 25%
        ({0: 50.0, 1: 100.0, 2: 190.0}, 80.0, 4, "cpu", 1, 2),  # fewest workers that outpace the step
        ({0: 50.0, 1: 90.0, 2: 190.0}, 80.0, 4, "cpu", 2, 2),  # 90 < 1.2 x 80: one is not enough
        ({0: 50.0, 1: 60.0, 2: 70.0}, 100.0, 2, "cpu", 1, 1),  # loader-bound; the step keeps a core
        ({0: 50.0, 2: 90.0}, 100.0, 1, "cpu", 0, 1),  # one core: no worker
        ({0: 50.0, 2: 90.0, 4: 200.0}, 150.0, 8, "cuda", 4, 4),  # the step runs on the GPU
        ({0: 50.0, 2: 90.0, 4: 80.0}, 150.0, 8, "cuda", 2, 4),  # loader-bound: its fastest count
    ],
)
def test_recommend_takes_the_fewest_workers_that_keep_the_step_fed(
    loader, step, cores, device, workers, threads
):
    rec = recommend(loader, step, cores, device)
    assert (rec.workers, rec.threads) == (workers, threads), rec.reason


def test_recommend_says_why():
    fed = recommend({0: 50.0, 1: 100.0}, 80.0, 4)
    assert "more than the step's 80" in fed.reason and fed.images_per_s == 80.0
    assert "barely slows the step" in recommend({0: 9000.0}, 100.0, 4).reason
    limited = recommend({0: 50.0, 1: 60.0, 2: 70.0}, 100.0, 2)
    assert "the loader limits the run" in limited.reason and "at most 1 on 2 cores" in limited.reason
    assert limited.images_per_s == pytest.approx(60.0 / LOADER_MARGIN)
    with pytest.raises(ValueError, match="loader measurements above 0"):
        recommend({}, 1.0, 2)
    with pytest.raises(ValueError, match="must be positive"):
        recommend({0: 1.0}, 0.0, 2)


def test_pipeline_ops_split_colour_steps_and_share_the_batch_between_choices():
    colour = PhotometricConfig(jitter_p=0.8, grayscale_p=0.0, blur_p=1.0, solarize_p=0.2)
    pipeline = PhotometricChoice(choice=(AutoAugmentConfig(), (AutoAugmentConfig(), colour)), p=(3.0, 1.0))
    ops = pipeline_ops(pipeline, 64, "view1.")
    assert [(name, n) for name, n, _, _ in ops] == [
        ("view1.choice0.autoaugment", 48),
        ("view1.choice1.0.autoaugment", 16),
        ("view1.choice1.1.jitter", 16),
        ("view1.choice1.1.blur", 16),
        ("view1.choice1.1.solarize", 16),
    ]
    assert [takes_uint8 for _, _, _, takes_uint8 in ops] == [True, True, False, False, False]
    images = torch.rand(4, 3, 8, 8)
    blurred = ops[3][2](images, torch.Generator().manual_seed(0))
    # the blur alone: no jitter, no solarize (which would push pixels past their maxima)
    assert blurred.shape == images.shape and not torch.equal(blurred, images)
    assert blurred.max() <= images.max() + 1e-6


def test_peak_tflops_knows_the_variant_and_the_precision():
    assert peak_tflops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.0
    assert peak_tflops("NVIDIA H100 PCIe", torch.bfloat16) == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-40GB", None) == 19.5
    assert peak_tflops("Some Future GPU", torch.bfloat16) is None

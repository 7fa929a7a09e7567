"""The trainer end to end on tiny runs: resume exactness, corrupt images, export, torchrun."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densessl.cli import main
from densessl.config import load_config
from densessl.export import export_backbone, torchvision_reference
from densessl.training.optim import lr_at
from densessl.training.trainer import Trainer
from tests.helpers import QUICK, TINY, free_port

ROOT = Path(__file__).resolve().parents[2]


def losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def test_the_logged_gradient_norm_is_the_one_before_clipping(tmp_path):
    def records(name: str, overrides: list[str]) -> list[dict]:
        Trainer(load_config(QUICK, [*TINY, "train.max_steps=3", *overrides]), tmp_path / name).fit()
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    free, clipped = records("free", []), records("clipped", ["optim.clip_grad=1e-3"])
    # the first step's gradients come from the same weights and views either way
    assert free[0]["grad_norm"] == pytest.approx(clipped[0]["grad_norm"], rel=1e-4)
    assert free[0]["grad_norm"] > 1e-2
    # later steps differ: the clipped run barely moved its weights
    assert free[-1]["loss"] != pytest.approx(clipped[-1]["loss"], rel=1e-6)


def test_resumed_run_continues_the_same_numbers(tmp_path):
    full = Trainer(load_config(QUICK, [*TINY, "train.max_steps=8"]), tmp_path / "full").fit()
    assert full["step"] == 8
    Trainer(load_config(QUICK, [*TINY, "train.max_steps=4"]), tmp_path / "cut").fit()
    resumed = Trainer(load_config(QUICK, [*TINY, "train.max_steps=8"]), tmp_path / "cut", resume="auto").fit()
    assert resumed["step"] == 8
    uninterrupted, continued = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(continued) == list(range(1, 9))
    for step in range(5, 9):
        assert continued[step] == pytest.approx(uninterrupted[step], abs=1e-6), step
    saved = (tmp_path / "cut" / "config.yaml").read_text()
    assert "densecl" in saved and "max_steps: 8" in saved


def test_a_resume_starts_at_the_checkpoints_step_and_says_so(tmp_path):
    # A run is deterministic, so a resume that silently started from scratch would log the very
    # same losses: what gives it away is the step it starts at and the history it rewrites.
    run = tmp_path / "run"
    Trainer(load_config(QUICK, [*TINY, "train.max_steps=4"]), run).fit()
    before = (run / "metrics.jsonl").read_text().splitlines()
    resumed = Trainer(load_config(QUICK, [*TINY, "train.max_steps=8"]), run, resume="auto").fit()
    assert resumed["step"] == 8 and resumed["last_metrics"]["step"] == 8
    after = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in after]
    assert steps == list(range(1, 9)), "each step logged once, in order"
    # the first four records are the first run's own lines: their wall-clock fields
    # (images_per_s) would differ had the resumed run trained those steps again
    assert after[:4] == before
    log = (run / "run.log").read_text()
    checkpoint = run / "checkpoints" / "last.pt"
    assert log.count("new run") == 1 and log.count("resuming from") == 1
    assert f"resuming from {checkpoint} at step 4" in log
    assert log.index("new run") < log.index("resuming from")


def test_a_length_in_steps_ends_part_way_through_an_epoch_with_its_schedule_spanning_it(tmp_path):
    # TINY: 48 scenes in batches of 8, 6 steps per epoch; 9 steps are an epoch and a half
    config = load_config(QUICK, [*TINY, "train.steps=9"])
    summary = Trainer(config, tmp_path / "steps").fit()
    assert (summary["step"], summary["total_steps"]) == (9, 9)
    records = [json.loads(line) for line in (tmp_path / "steps" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 10))
    expected = [lr_at(config.optim, step, 6, 1.5) for step in range(9)]
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert records[-1]["lr"] < 0.1 * max(r["lr"] for r in records), "the cosine nearly ends at step 9"
    assert Path(summary["checkpoint"]).is_file()
    # a length of whole epochs in steps is the run of those epochs
    Trainer(load_config(QUICK, [*TINY, "train.steps=12"]), tmp_path / "whole").fit()
    Trainer(load_config(QUICK, TINY), tmp_path / "epochs").fit()
    assert losses(tmp_path / "whole") == pytest.approx(losses(tmp_path / "epochs"), abs=1e-6)


def write_folder(root: Path, good: int = 12) -> None:
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    for i in range(good):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "sub" / f"{i:03d}.png")
    (root / "005_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")


def test_corrupt_image_is_skipped_with_a_warning_and_counted(tmp_path, caplog):
    write_folder(tmp_path / "images")
    config = load_config(
        QUICK,
        [
            *TINY,
            f"data.source=folder:{tmp_path / 'images'}",
            "train.batch_size=4",
            "train.epochs=1",
            "method.queue_size=8",
        ],
    )
    with caplog.at_level(logging.WARNING):
        Trainer(config, tmp_path / "run").fit()
    warnings = [r for r in caplog.records if "005_broken.jpg" in r.getMessage()]
    assert len(warnings) == 1 and "skipping unreadable image" in warnings[0].getMessage()
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_images"] == 1


def test_corrupt_image_policy_error_stops_with_the_path(tmp_path, capsys):
    write_folder(tmp_path / "images")
    code = main(
        [
            "pretrain",
            str(QUICK),
            *TINY,
            f"data.source=folder:{tmp_path / 'images'}",
            "data.corrupt=error",
            "train.batch_size=13",
            "train.epochs=1",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "005_broken.jpg" in err and "data.corrupt=skip" in err


def test_export_loads_into_torchvision_resnet_strict(tmp_path):
    overrides = [*TINY, "model.width=1.0", "model.small_input=false", "train.max_steps=1"]
    result = Trainer(load_config(QUICK, overrides), tmp_path / "run").fit()
    info = export_backbone(result["checkpoint"], tmp_path / "backbone.pth")
    assert info["method"] == "densecl" and info["encoder"] == "query"
    state = torch.load(tmp_path / "backbone.pth", weights_only=True)
    reference = torchvision_reference("resnet18")
    reference.load_state_dict(state, strict=True)
    ckpt = torch.load(result["checkpoint"], weights_only=False)
    query = {
        k.removeprefix("encoder_q.backbone."): v
        for k, v in ckpt["model"].items()
        if k.startswith("encoder_q.backbone.")
    }
    assert set(query) == set(state) and all(torch.equal(query[k], state[k]) for k in state)
    x = torch.randn(2, 3, 64, 64)
    from densessl.export import load_backbone

    backbone = load_backbone(tmp_path / "backbone.pth")
    reference.eval()
    assert torch.allclose(
        reference.layer4(
            reference.layer3(
                reference.layer2(
                    reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
                )
            )
        ),
        backbone(x),
        atol=1e-5,
    )


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "densessl",
        "pretrain",
        str(QUICK),
        *TINY,
        "train.max_steps=3",
        "--out",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(losses(tmp_path / "ddp")) == [1, 2, 3]
    assert (tmp_path / "ddp/checkpoints/last.pt").is_file()


@pytest.mark.parametrize("optimizer", ["lars", "adamw"])
def test_fp16_with_grad_scaler_and_other_optimizers(tmp_path, optimizer):
    overrides = [
        *TINY,
        "train.precision=fp16",
        f"optim.name={optimizer}",
        "optim.clip_grad=3.0",
        "train.max_steps=2",
    ]
    result = Trainer(load_config(QUICK, overrides), tmp_path / "run").fit()
    ckpt = torch.load(result["checkpoint"], weights_only=False)
    assert result["step"] == 2 and ckpt["scaler"] is not None
    assert all(np.isfinite(v) for v in losses(tmp_path / "run").values())


def test_slotcon_resume_restores_momentum_counter_and_losses(tmp_path):
    recipe = ROOT / "densessl/recipes/quick/slotcon_synthetic.yaml"
    tiny = [o for o in TINY if not o.startswith("method.")] + [
        "method.num_prototypes=8",
        "method.hidden_dim=16",
    ]

    def metrics(run_dir: Path) -> dict[int, dict]:
        return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}

    Trainer(load_config(recipe, [*tiny, "train.max_steps=6"]), tmp_path / "full").fit()
    Trainer(load_config(recipe, [*tiny, "train.max_steps=3"]), tmp_path / "cut").fit()
    Trainer(load_config(recipe, [*tiny, "train.max_steps=6"]), tmp_path / "cut", resume="auto").fit()
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    for step in range(4, 7):
        assert cut[step]["momentum"] == pytest.approx(full[step]["momentum"], abs=1e-9)
        assert cut[step]["loss"] == pytest.approx(full[step]["loss"], abs=1e-5)
    assert full[6]["momentum"] > full[1]["momentum"]  # cosine schedule by iteration


def test_compiled_backbones_keep_their_names_and_numbers(tmp_path):
    from densessl.training.trainer import build_model, compile_backbones

    method = build_model(load_config(QUICK, TINY))
    names = list(method.state_dict())
    assert compile_backbones(method, backend="eager") == 2  # DenseCL's query and key backbones
    assert list(method.state_dict()) == names
    plain = Trainer(load_config(QUICK, [*TINY, "train.max_steps=3"]), tmp_path / "plain").fit()
    compiled = Trainer(
        load_config(QUICK, [*TINY, "train.max_steps=3", "train.compile=true", "train.compile_backend=eager"]),
        tmp_path / "compiled",
    ).fit()
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "plain"), rel=1e-6)
    state = torch.load(compiled["checkpoint"], map_location="cpu", weights_only=False)["model"]
    assert list(state) == list(
        torch.load(plain["checkpoint"], map_location="cpu", weights_only=False)["model"]
    )


def test_init_seed_fixes_the_initial_weights_and_leaves_every_later_draw_to_seed():
    from densessl.training.trainer import build_initial_model

    def start(*overrides):
        model = build_initial_model(load_config(QUICK, [*TINY, *overrides]))
        return model.state_dict(), torch.rand(4)  # the first draw after building

    plain0, draw0 = start("train.seed=0")
    plain1, draw1 = start("train.seed=1")
    fixed1, fixed_draw1 = start("train.seed=1", "train.init_seed=0")
    weights = [k for k, v in plain0.items() if v.is_floating_point() and v.std() > 0]
    assert weights and all(torch.equal(fixed1[k], plain0[k]) for k in plain0)
    assert any(not torch.equal(plain1[k], plain0[k]) for k in weights)
    torch.manual_seed(1)
    assert torch.equal(fixed_draw1, torch.rand(4))
    assert not torch.equal(fixed_draw1, draw0)
    assert torch.equal(start("train.seed=1", "train.init_seed=1")[0]["encoder_q.backbone.conv1.weight"],
                       plain1["encoder_q.backbone.conv1.weight"])  # fmt: skip


def test_a_checkpoint_from_before_init_seed_resumes_and_a_changed_one_does_not():
    from densessl.config import to_dict
    from densessl.training.trainer import config_differences

    current = to_dict(load_config(QUICK, TINY))
    older = {**current, "train": {k: v for k, v in current["train"].items() if k != "init_seed"}}
    assert config_differences(older, current) == []
    changed = to_dict(load_config(QUICK, [*TINY, "train.init_seed=3"]))
    assert config_differences(older, changed) == ["train.init_seed (checkpoint <unset>, now 3)"]

"""seg-finetune: the dilated backbone, the FCN decoder, the recipes, the two reported figures, the CLI."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from densessl.cli import main
from densessl.data.segsets import write_cityscapes_fixture, write_leopart_voc_fixture
from densessl.errors import ConfigError
from densessl.eval import finetune as ft
from densessl.eval.finetune_cli import add_commands
from densessl.models.backbones import ResNetBackbone
from tests.export.helpers import MOCO_VIT, densessl_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: a second intra-op thread only spin-waits on a loaded 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = ["--weights", "random", "--arch", "resnet18", "--small-input", "--width", "0.125"]
SYNTH = ["--data", "synthetic:easy", "--synthetic-train", "8", "--synthetic-val", "4"]
FAST = ["--epochs", "2", "--batch-size", "4", "--size", "32", "--decoder-channels", "16", "--workers", "0"]


def _run(argv: list[str], capsys) -> dict:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_dilated_backbone_loads_undilated_weights_strictly_and_gives_stride_16(arch) -> None:
    torch.manual_seed(0)
    plain = ResNetBackbone(arch, width=0.125).eval()
    state = plain.state_dict()
    dilated = ft.dilate_last_stage(ResNetBackbone(arch, width=0.125)).eval()
    assert list(dilated.state_dict()) == list(state)
    dilated.load_state_dict(state, strict=True)  # raises on a missing or unexpected name
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert plain(x).shape[-2:] == (2, 3)  # stride 32
        assert dilated(x).shape[-2:] == (4, 6)  # stride 16
    for name, conv in dilated.layer4.named_modules():
        if isinstance(conv, nn.Conv2d):
            assert conv.stride == (1, 1), name
            if conv.kernel_size == (3, 3):
                assert conv.dilation == (2, 2) and conv.padding == (2, 2), name
    # the stages before layer4 are untouched
    assert all(m.dilation == (1, 1) for m in dilated.layer3.modules() if isinstance(m, nn.Conv2d))


def test_dilating_a_small_input_resnet_halves_its_stride_and_a_vit_is_refused() -> None:
    plain = ResNetBackbone("resnet18", small_input=True, width=0.125).eval()
    dilated = ft.dilate_last_stage(ResNetBackbone("resnet18", small_input=True, width=0.125)).eval()
    dilated.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert plain(x).shape[-1] == 4 and dilated(x).shape[-1] == 8  # stride 8 -> 4
    with pytest.raises(ConfigError, match="ResNets only"):
        ft.dilate_last_stage(nn.Conv2d(3, 8, 1))


@pytest.mark.parametrize("dilation", [6, 1])
def test_fcn_decoder_layout(dilation) -> None:
    decoder = ft.fcn_decoder(64, 21, dilation)
    kinds = [type(m) for m in decoder]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    first, second, last = decoder[0], decoder[3], decoder[6]
    assert (first.in_channels, first.out_channels, second.in_channels, second.out_channels) == (
        64,
        256,
        256,
        256,
    )
    for conv in (first, second):
        assert conv.kernel_size == (3, 3) and conv.bias is None
        assert conv.dilation == (dilation, dilation) and conv.padding == (dilation, dilation)
    assert last.kernel_size == (1, 1) and last.out_channels == 21 and last.bias is None
    assert decoder[1].num_features == decoder[4].num_features == 256

    backbone = ft.dilate_last_stage(ResNetBackbone("resnet18", width=0.125))
    net = ft.FinetuneNet(backbone, 5, dilation, channels=16).eval()
    x = torch.randn(1, 3, 50, 38)
    with torch.no_grad():
        out = net(x)
        small = net.decoder(net.backbone(x))
    assert out.shape == (1, 5, 50, 38)
    expected = torch.nn.functional.interpolate(small, size=(50, 38), mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected)


# --- the recipes -------------------------------------------------------------------------------


def test_presets_and_their_per_epoch_lr() -> None:
    voc = ft.resolve_preset("voc")
    assert (voc.optimizer, voc.lr, voc.momentum, voc.weight_decay) == ("sgd", 0.003, 0.9, 1e-4)
    assert (voc.batch_size, voc.epochs, voc.milestones, voc.size, voc.val_size) == (
        16,
        45,
        (30, 40),
        512,
        512,
    )
    assert (voc.dilation, voc.augment, voc.train_split) == (6, "fixed", "trainaug")
    lrs = [ft.lr_at(voc, e) for e in range(45)]
    assert lrs[:30] == pytest.approx([0.003] * 30)
    assert lrs[30:40] == pytest.approx([3e-4] * 10)
    assert lrs[40:] == pytest.approx([3e-5] * 5)

    city = ft.resolve_preset("cityscapes")
    assert (city.optimizer, city.lr, city.weight_decay, city.batch_size, city.epochs) == (
        "adam",
        1e-4,
        1e-4,
        8,
        150,
    )
    assert (city.size, city.val_size, city.dilation, city.schedule, city.augment) == (
        768,
        None,
        1,
        "poly",
        "scale-crop",
    )
    assert city.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    assert ft.lr_at(city, 0) == pytest.approx(1e-4)
    assert ft.lr_at(city, 75) == pytest.approx(1e-4 * 0.5**0.9)
    assert ft.lr_at(city, 149) == pytest.approx(1e-4 * (1 / 150) ** 0.9)
    assert all(ft.lr_at(city, e + 1) < ft.lr_at(city, e) for e in range(149))

    # overrides: the VOC steps move with the epochs unless given; a size is the val size too
    short = ft.resolve_preset("voc", epochs=9, lr=0.01, batch_size=4, size=48)
    assert (short.milestones, short.lr, short.batch_size, short.size, short.val_size) == (
        (6, 8),
        0.01,
        4,
        48,
        48,
    )
    assert ft.resolve_preset("voc", epochs=9, milestones=[3]).milestones == (3,)
    assert ft.resolve_preset("voc", val_size=0).val_size is None
    with pytest.raises(ConfigError, match="epochs must be a positive"):
        ft.resolve_preset("voc", epochs=0)
    with pytest.raises(ConfigError, match="unknown fine-tuning preset"):
        ft.resolve_preset("ade")


@pytest.mark.parametrize("preset", ["voc", "cityscapes"])
def test_training_pairs_are_augmented_to_the_training_size(preset) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.full((20, 30), 3, dtype=np.uint8)
    settings = ft.resolve_preset(preset, size=24)
    data = ft._TrainSet([(image, mask)], settings, seed=0)
    seen = set()
    for k in range(12):
        x, y = data[k]
        assert x.shape == (3, 24, 24) and x.dtype == torch.uint8 and y.shape == (24, 24)
        seen |= set(torch.unique(y).tolist())
        assert torch.equal(data[k][1], y)  # the draws depend on (seed, k) only
    # rotated-in (VOC) and padded (Cityscapes at scale 0.5) pixels are ignored, never background
    assert seen == {3, 255}


# --- the two figures and the runs --------------------------------------------------------------


def _scores(miou: float) -> dict:
    return {"miou": miou, "pixel_acc": miou, "iou_per_class": [miou] * 7}


def test_best_on_val_is_chosen_at_the_evaluation_size_and_reported_apart_from_the_final_epoch(
    monkeypatch,
) -> None:
    # per epoch: (score at the evaluation size, score at original resolution)
    script = iter([(0.2, 0.6), (0.5, 0.4), (0.3, 0.35)])

    def fake_evaluate(*args, **kwargs):
        at_size, original = next(script)
        return {"at_size": _scores(at_size), "original": _scores(original)}

    monkeypatch.setattr(ft, "evaluate", fake_evaluate)
    data = ft.resolve_preset("voc", epochs=3, milestones=[1, 2], batch_size=2, size=32, decoder_channels=8)
    from densessl.eval.segmentation_cli import load_segmentation_data

    sets = load_segmentation_data("synthetic:easy", synthetic_train=4, synthetic_val=2)
    backbone = ResNetBackbone("resnet18", small_input=True, width=0.125)
    r = ft.run_finetune(backbone, sets.train, sets.val, 7, data)
    assert r["final"]["epoch_per_seed"] == [3] and r["final"]["miou"] == pytest.approx(0.35)
    best = r["best_on_val"]
    # epoch 2 has the best validation score at 32 px; its figure is its original-resolution one
    assert best["epoch_per_seed"] == [2] and best["miou"] == pytest.approx(0.4)
    assert best["miou_at_size_per_seed"] == [0.5] and "validation set" in best["selection"]
    assert r["miou"] == pytest.approx(0.35)  # the headline is the final epoch
    assert [e["lr"] for e in r["history"][0]] == pytest.approx([0.003, 0.0003, 0.00003])


def test_runs_average_over_seeds(capsys) -> None:
    r = _run(["seg-finetune", *TINY, *SYNTH, *FAST, "--runs", "2"], capsys)
    assert r["seeds"] == [0, 1] and len(r["history"]) == 2 and len(r["history"][0]) == 2
    per_seed = r["miou_per_seed"]
    assert len(per_seed) == 2 and per_seed[0] != per_seed[1]
    assert r["miou"] == pytest.approx(np.mean(per_seed))
    assert r["miou_std"] == pytest.approx(np.std(per_seed, ddof=1))
    for part in ("final", "best_on_val"):
        assert r[part]["miou"] == pytest.approx(np.mean(r[part]["miou_per_seed"]))
        assert len(r[part]["epoch_per_seed"]) == 2
    assert r["final"]["miou_per_seed"] == per_seed


# --- the command line --------------------------------------------------------------------------


def test_cli_runs_end_to_end_on_synthetic_and_prints_one_json_line(capsys) -> None:
    assert main(["eval", "seg-finetune", *TINY, *SYNTH, *FAST]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["protocol"] == "seg-finetune" and r["unit"] == "percent" and r["preset"] == "voc"
    assert r["settings"]["size"] == r["settings"]["val_size"] == 32 and r["settings"]["milestones"] == [1, 2]
    assert r["output_stride"] == 4 and r["num_classes"] == 7 and r["num_train"] == 8 and r["num_val"] == 4
    assert 0.0 <= r["miou"] <= 100.0 and 0.0 <= r["best_on_val"]["miou"] <= 100.0
    assert r["best_on_val"]["miou"] == pytest.approx(
        r["history"][0][r["best_on_val"]["epoch_per_seed"][0] - 1]["miou_original"]
    )
    assert r["final"]["miou"] == pytest.approx(r["history"][0][-1]["miou_original"])


def test_cli_reads_the_voc_trainaug_and_cityscapes_layouts(tmp_path, capsys) -> None:
    voc = write_leopart_voc_fixture(tmp_path)
    r = _run(["seg-finetune", *TINY, "--data", f"leopart-voc:{voc}", *FAST, "--epochs", "1"], capsys)
    assert r["num_classes"] == 21 and r["num_train"] == 5 and r["num_val"] == 2  # trainaug, val
    assert r["settings"]["val_size"] == 32 and math.isfinite(r["final"]["miou"])
    city = write_cityscapes_fixture(tmp_path, n_train=3, n_val=2)
    r = _run(["seg-finetune", *TINY, "--data", f"cityscapes:{city}", *FAST, "--epochs", "1"], capsys)
    assert r["preset"] == "cityscapes" and r["num_classes"] == 19 and r["settings"]["optimizer"] == "adam"
    assert r["settings"]["val_size"] is None and r["eval_size"] is None  # full resolution


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    argv = ["eval", "seg-finetune", *TINY, *FAST]
    assert main([*argv, "--data", "nowhere:/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data 'nowhere:/x'" in err[0] and "synthetic" in err[0]
    assert main([*argv, "--data", f"voc:{tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "VOC" in err[0]
    assert main([*argv, *SYNTH, "--epochs", "0"]) == 2
    assert "epochs must be a positive" in capsys.readouterr().err
    densessl_checkpoint(tmp_path / "v.pt", "quick/mocov2_synthetic.yaml", MOCO_VIT)
    assert main(["eval", "seg-finetune", "--weights", str(tmp_path / "v.pt"), *SYNTH, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ResNets only" in err[0] and str(tmp_path / "v.pt") in err[0]


def test_cli_fine_tunes_a_densessl_checkpoint(tmp_path, capsys) -> None:
    densessl_checkpoint(
        tmp_path / "r.pt", "quick/mocov2_synthetic.yaml", ["model.width=0.125", "method.queue_size=16"]
    )
    r = _run(["seg-finetune", "--weights", str(tmp_path / "r.pt"), *SYNTH, *FAST, "--epochs", "1"], capsys)
    assert r["weights"] == str(tmp_path / "r.pt") and r["output_stride"] == 4 and math.isfinite(r["miou"])

"""DAVIS video label propagation: propagation against a dense reference, the CRW encoder, and the
``eval davis`` protocol and command end to end on synthetic clips."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from densessl.config import ConfigError, ModelConfig
from densessl.data.davis import DAVIS2017
from densessl.data.synthetic import save_palette_png
from densessl.data.synthetic_clips import clip_name, write_synthetic_davis
from densessl.eval.video import labels_to_ids, one_hot_labels, propagate, run_davis, video_encoder
from densessl.eval.video_cli import add_commands
from densessl.models.backbones import backbone_from_config
from tests.export.helpers import mgc_checkpoint


def box(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------------------------
# propagation
# ----------------------------------------------------------------------------------------------


def test_propagate_static_clip_reproduces_first_label() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 16, 6, 7, generator=g).repeat(5, 1, 1, 1)
    ids = torch.randint(0, 3, (6, 7), generator=g)
    first = torch.nn.functional.one_hot(ids, 3).permute(2, 0, 1).float()
    out = propagate(feats, first)
    assert out.shape == (5, 3, 6, 7)
    assert torch.allclose(out, first.expand_as(out), atol=1e-5)
    # settings that exclude every short-term neighbour but the location itself keep it exact too
    out = propagate(feats, first, topk=1, context=2, radius=0.5)
    assert torch.equal(out.argmax(1), ids.expand(5, -1, -1))
    with pytest.raises(ConfigError, match="temperature"):
        propagate(feats, first, temperature=0.0)


def dense_reference(feats, first, topk, context, radius, temperature):
    """The propagation rule written the slow way: whole-frame affinities with a distance mask."""
    f = torch.nn.functional.normalize(feats, dim=1)
    n, c, h, w = f.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    far = torch.cdist(coords, coords) >= radius
    labels = [first]
    for t in range(1, n):
        ctx = [max(j, 0) for j in range(t - context, t)]
        q = f[t].reshape(c, -1).T
        sims = [q @ f[0].reshape(c, -1)] + [
            (q @ f[j].reshape(c, -1)).masked_fill(far, -torch.inf) for j in ctx
        ]
        labs = [labels[0]] + [labels[j] for j in ctx]
        flat = torch.cat([lab.reshape(first.shape[0], -1).T for lab in labs])
        top, idx = torch.cat(sims, 1).topk(topk, dim=1)
        pred = (torch.softmax(top / temperature, 1)[..., None] * flat[idx]).sum(1)
        labels.append(pred.T.reshape(first.shape))
    return torch.stack(labels)


def test_propagate_matches_dense_reference() -> None:
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(6, 8, 7, 9, generator=g)
    first = torch.softmax(torch.randn(3, 7, 9, generator=g) * 3, 0)
    settings = {"topk": 5, "context": 3, "radius": 2.5, "temperature": 0.1}
    expected = dense_reference(feats, first, **settings)
    for tile in (2, 3, 16):
        assert torch.allclose(propagate(feats, first, tile=tile, **settings), expected, atol=1e-5)


def test_propagate_follows_a_moving_pattern() -> None:
    """A feature pattern shifted by one cell per frame carries its labels along."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(32, 8, 12, generator=g)
    feats = torch.stack([torch.roll(base, shifts=t, dims=2) for t in range(4)])
    ids = torch.zeros(8, 12, dtype=torch.long)
    ids[2:6, 3:6] = 1
    first = torch.nn.functional.one_hot(ids, 2).permute(2, 0, 1).float()
    out = propagate(feats, first, topk=1)
    for t in range(4):
        assert torch.equal(out[t].argmax(0), torch.roll(ids, shifts=t, dims=1))


def test_label_resizing_round_trip() -> None:
    ids = np.zeros((16, 16), dtype=np.uint8)
    ids[0:8, 8:16] = 2
    ids[8:16, 0:8] = 255
    soft = one_hot_labels(ids, 2, (4, 4))
    assert soft.shape == (3, 4, 4)
    assert soft[:, 2:, :2].sum() == 0  # void belongs to no channel
    back = labels_to_ids(soft, (16, 16))
    assert back.dtype == np.uint8 and back[0, 15] == 2 and back[0, 0] == 0


class PixelFeatures(nn.Module):
    """A fixed stride-1 random 3x3 convolution: features of a location are its own patch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 24, 3, padding=1)
        self.out_channels = 24

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_static_clip_scores_100(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ids = np.zeros((24, 32), dtype=np.uint8)
    ids[3:12, 4:15] = 1
    ids[14:22, 18:30] = 2
    seq = tmp_path / "DAVIS"
    for sub in ("JPEGImages/480p/still", "Annotations/480p/still", "ImageSets/2017"):
        (seq / sub).mkdir(parents=True)
    for t in range(4):
        Image.fromarray(image).save(seq / "JPEGImages/480p/still" / f"{t:05d}.jpg", quality=95)
        save_palette_png(ids, seq / "Annotations/480p/still" / f"{t:05d}.png")
    (seq / "ImageSets/2017/val.txt").write_text("still\n")
    result = run_davis(PixelFeatures(), DAVIS2017(tmp_path))
    assert result["J&F-Mean"] == 100.0 and result["J-Mean"] == 100.0 and result["F-Mean"] == 100.0
    assert result["sequences"]["still"]["feature_grid"] == [24, 32]


def test_crw_encoder_is_stride_8_res4() -> None:
    net = backbone_from_config(ModelConfig(arch="resnet18", width=0.125))
    enc = video_encoder(net, "auto")
    assert enc is not net and not hasattr(enc, "layer4")
    out = enc(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, enc.out_channels, 8, 12) and enc.out_channels == 32
    assert net.layer3[0].conv1.stride == (2, 2)  # the backbone itself is untouched
    small = backbone_from_config(ModelConfig(arch="resnet18", small_input=True, width=0.125))
    assert video_encoder(small, "auto") is small


# ----------------------------------------------------------------------------------------------
# the end-to-end protocol and the command
# ----------------------------------------------------------------------------------------------

FRAMES = 5


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthdavis")
    root = write_synthetic_davis(out, "easy", sequences=2, frames=FRAMES)
    assert root == out / "DAVIS"
    return out


def test_davis_end_to_end(synth_root: Path, tmp_path: Path) -> None:
    ds = DAVIS2017(synth_root)
    torch.manual_seed(0)
    backbone = backbone_from_config(ModelConfig(arch="resnet18", small_input=True, width=0.125))
    cache = tmp_path / "cache"
    first = run_davis(backbone, ds, cache_dir=cache, save_dir=tmp_path / "pred")
    for key in ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall"):
        assert 0.0 <= first[key] <= 100.0, key
    for key in ("J-Decay", "F-Decay"):
        assert -100.0 <= first[key] <= 100.0
    assert first["units"] == "percent" and first["encoder"] == "full"
    assert first["num_sequences"] == 2 and first["num_frames"] == 2 * FRAMES
    assert first["num_objects"] == sum(ds.num_objects(s) for s in ds.sequences)
    assert first["sequences"][clip_name(0)]["frames"] == FRAMES
    assert first["sequences"][clip_name(0)]["feature_grid"] == [8, 8]
    assert first["seconds"] > 0
    preds = sorted((tmp_path / "pred" / clip_name(1)).glob("*.png"))
    assert len(preds) == FRAMES
    with Image.open(preds[0]) as png:
        assert png.mode == "P" and np.array_equal(np.array(png), ds.first_annotation(clip_name(1)))
    assert len(list(cache.glob("*.pt"))) == 2
    second = run_davis(backbone, ds)  # the same figures again, features recomputed
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_davis_command(synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol"))
    argv = ["davis", "--weights", "random", "--arch", "resnet18", "--small-input", "--width", "0.125"]
    argv += ["--data", str(synth_root), "--device", "cpu", "--sequences", clip_name(0)]
    args = parser.parse_args(argv)
    assert (args.topk, args.context, args.radius, args.temperature) == (10, 20, 12.0, 0.05)
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1
    out = json.loads(line[0])
    assert out["protocol"] == "davis" and out["weights"] == "random" and out["data"] == str(synth_root)
    assert out["num_sequences"] == 1 and 0.0 <= out["J&F-Mean"] <= 100.0
    args = parser.parse_args([*argv, "--topk", "0"])
    with pytest.raises(ConfigError, match="topk"):
        args.func(args)


def test_davis_on_an_mgc_vit_propagates_its_patch_tokens(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mgc_checkpoint(tmp_path / "mgc.pth")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol"))
    # a short side of 36 px is 4.5 patches: the frames go in at 32 px, a 4x4 grid of tokens
    argv = ["davis", "--weights", str(tmp_path / "mgc.pth"), "--data", str(synth_root), "--short-side", "36"]
    argv += ["--device", "cpu", "--sequences", clip_name(0)]
    for encoder in ("query", "teacher"):
        args = parser.parse_args([*argv, "--encoder", encoder])
        assert args.trunk == "auto" and args.func(args) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["encoder"] == "full" and out["sequences"][clip_name(0)]["feature_grid"] == [4, 4]
        assert 0.0 <= out["J&F-Mean"] <= 100.0
    # the former spelling of --trunk still names it; a ViT has no CRW trunk
    for words in (["--encoder", "crw"], ["--trunk", "crw"]):
        args = parser.parse_args([*argv, *words])
        with pytest.raises(ConfigError, match="'crw' needs a ResNet backbone, got ViTBackbone"):
            args.func(args)

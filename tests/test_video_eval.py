"""DAVIS video label propagation: J/F metrics, the DAVIS-2017 reader, synthetic clips, propagation
and the ``eval davis`` command end to end."""

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
from densessl.data.base import CorruptImageError, DataError
from densessl.data.davis import DAVIS2017, fixture_clip, write_davis_fixture
from densessl.data.synthetic import save_palette_png
from densessl.data.synthetic_clips import clip_name, render_clip, write_synthetic_davis
from densessl.eval.davis_metrics import (
    SUMMARY_KEYS,
    SequenceScores,
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    evaluate_sequence,
    region_similarity,
    statistics,
    summarize,
)
from densessl.eval.video import labels_to_ids, one_hot_labels, propagate, run_davis, video_encoder
from densessl.eval.video_cli import add_commands
from densessl.models.backbones import backbone_from_config


def box(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def test_region_similarity_hand_values() -> None:
    g = box((10, 10), 2, 6, 2, 6)  # 16 px
    assert region_similarity(g, box((10, 10), 2, 6, 3, 7)) == pytest.approx(12 / 20)
    assert region_similarity(g, box((10, 10), 2, 6, 4, 8)) == pytest.approx(8 / 24)
    assert region_similarity(g, g) == 1.0
    empty = np.zeros((10, 10), dtype=bool)
    assert region_similarity(empty, empty) == 1.0  # empty union counts as 1
    assert region_similarity(empty, g) == 0.0
    assert region_similarity(g, empty) == 0.0
    # void pixels are left out of intersection and union
    extra = g | box((10, 10), 2, 6, 6, 7)
    void = box((10, 10), 0, 10, 6, 7)
    assert region_similarity(g, extra) == pytest.approx(16 / 20)
    assert region_similarity(g, extra, void) == 1.0


def test_boundary_map_is_one_sided_and_thin() -> None:
    g = box((10, 10), 2, 6, 2, 6)
    edge = boundary_map(g)
    ring = box((10, 10), 1, 6, 1, 6) & ~box((10, 10), 2, 5, 2, 5)
    assert np.array_equal(edge, ring)  # the 5x5 ring from (1, 1) to (5, 5): 16 pixels
    # the image border is not a boundary
    assert not boundary_map(np.ones((6, 6), dtype=bool)).any()


def test_boundary_f_hand_values() -> None:
    g = box((10, 10), 2, 6, 2, 6)
    assert boundary_tolerance((10, 10)) == 1.0  # ceil(0.008 * 14.1)
    assert boundary_tolerance((480, 854)) == 8.0
    one = box((10, 10), 2, 6, 3, 7)
    # a one-pixel shift is within the 1 px tolerance of a 10x10 image
    assert boundary_f_measure(g, one) == pytest.approx(1.0)
    # with an exact match (tolerance 0) 8 of the 16 contour pixels coincide on each side
    assert boundary_f_measure(g, one, tolerance=0.0) == pytest.approx(0.5)
    # a two-pixel shift at 1 px: 10 of 16 contour pixels matched on each side
    two = box((10, 10), 2, 6, 4, 8)
    assert boundary_f_measure(g, two) == pytest.approx(10 / 16)
    assert boundary_f_measure(g, two, tolerance=2.0) == pytest.approx(1.0)
    empty = np.zeros((10, 10), dtype=bool)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, g) == 0.0  # precision 0, recall 1
    assert boundary_f_measure(g, empty) == 0.0  # precision 1, recall 0
    # void pixels are removed from both masks before the contours are drawn
    assert boundary_f_measure(g, two, void=box((10, 10), 0, 10, 0, 10)) == 1.0


def test_statistics_and_summary() -> None:
    mean, recall, decay = statistics(np.arange(10) / 10)
    # quarter bins over positions 0..9: [0, 2] and [7, 9]
    assert (mean, recall) == pytest.approx((0.45, 0.4))
    assert decay == pytest.approx(0.1 - 0.8)
    assert statistics(np.array([0.7])) == pytest.approx((0.7, 1.0, 0.0))
    a = SequenceScores("a", j=np.array([[1.0, 1.0], [0.0, 0.5]]), f=np.array([[1.0, 0.0], [1.0, 1.0]]))
    s = summarize([a])
    assert list(s)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS) and s["objects"] == 2
    assert s["J-Mean"] == pytest.approx(100 * (1.0 + 0.25) / 2)
    assert s["F-Mean"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert s["J&F-Mean"] == pytest.approx((s["J-Mean"] + s["F-Mean"]) / 2)
    assert s["J-Recall"] == pytest.approx(50.0)


def test_evaluate_sequence_skips_first_and_last_frame() -> None:
    gt = np.zeros((4, 10, 10), dtype=np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 7:9, 7:9] = 2
    pred = gt.copy()
    pred[0] = 0  # first and last frames are not scored
    pred[3] = 2
    pred[2, 7:9, 7:9] = 0  # object 2 lost in frame 2
    scores = evaluate_sequence(gt, pred, "s")
    assert scores.j.shape == (2, 2)
    np.testing.assert_allclose(scores.j, [[1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(scores.f, [[1.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="id 3"):
        evaluate_sequence(gt, np.full_like(gt, 3))


# ----------------------------------------------------------------------------------------------
# DAVIS reader and fixture
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("davis")
    root = write_davis_fixture(out, frames=4, void=True)
    assert root == out / "DAVIS"
    return out


def test_reader_reads_fixture_exactly(fixture_root: Path) -> None:
    ds = DAVIS2017(fixture_root)
    assert ds.sequences == ["blue-box", "red-box"] and len(ds) == 2
    assert DAVIS2017(fixture_root / "DAVIS", "train").sequences == ["blue-box"]
    for i, name in enumerate(ds.sequences):
        images, masks = fixture_clip(i, 4, void=True)
        assert ds.frame_names(name) == ["00000", "00001", "00002", "00003"]
        ann = ds.annotations(name)
        assert ann.dtype == np.uint8 and np.array_equal(ann, masks)
        assert set(np.unique(ann)) == {0, 1, 2, 255}
        assert np.array_equal(ds.first_annotation(name), masks[0])
        assert ds.num_objects(name) == 2
        frames = ds.frames(name)
        assert len(frames) == 4 and frames.describe(2).endswith(f"{name}/00002.jpg")
        assert np.abs(frames[1].astype(int) - images[1]).mean() < 8  # JPEG copy
    with Image.open(ds.annotation_path("red-box", 0)) as png:
        assert png.mode == "P"
        assert png.getpalette()[3:6] == [128, 0, 0]  # DAVIS object 1 is dark red


def test_reader_errors(fixture_root: Path, tmp_path: Path) -> None:
    ds = DAVIS2017(fixture_root)
    with pytest.raises(DataError, match="'nope' is not in split 'val'"):
        ds.frames("nope")
    with pytest.raises(DataError, match="not in split"):
        DAVIS2017(fixture_root, sequences=["nope"])
    with pytest.raises(DataError, match="test.txt is missing"):
        DAVIS2017(fixture_root, "test")
    with pytest.raises(DataError, match="no DAVIS folder"):
        DAVIS2017(tmp_path / "absent")
    root = write_davis_fixture(tmp_path, frames=3)
    (root / "ImageSets" / "2017" / "val.txt").write_text("blue-box\nghost\n")
    with pytest.raises(DataError, match="'ghost' listed in .* has no frame folder"):
        DAVIS2017(tmp_path)
    (root / "ImageSets" / "2017" / "val.txt").write_text("blue-box\n")
    bad = root / "JPEGImages" / "480p" / "blue-box" / "00001.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = DAVIS2017(tmp_path)
    with pytest.raises(CorruptImageError, match="00001.jpg"):
        ds.load_frame("blue-box", 1)
    backbone = nn.Conv2d(3, 4, 1)
    backbone.out_channels = 4
    with pytest.raises(DataError, match="00001.jpg"):
        run_davis(backbone, ds)


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
# synthetic clips and the end-to-end protocol
# ----------------------------------------------------------------------------------------------

FRAMES = 5


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthdavis")
    root = write_synthetic_davis(out, "easy", sequences=2, frames=FRAMES)
    assert root == out / "DAVIS"
    return out


def test_synthetic_clip_properties() -> None:
    images, masks = render_clip("easy", 0, 6)
    again, masks_again = render_clip("easy", 0, 6)
    assert np.array_equal(images, again) and np.array_equal(masks, masks_again)
    assert images.shape == (6, 64, 64, 3) and masks.shape == (6, 64, 64)
    n = int(masks[0].max())
    assert 1 <= n <= 4 and set(np.unique(masks[0])) == set(range(n + 1))
    assert not np.array_equal(masks[0], masks[-1])  # objects move
    assert not np.array_equal(render_clip("easy", 1, 6)[1], masks)
    # objects keep their size roughly (scale drift at most ~15%): areas change little per frame
    areas = np.array([[np.count_nonzero(m == k) for k in range(1, n + 1)] for m in masks])
    assert (areas[0] > 0).all()


def test_synthetic_clips_round_trip_through_reader(synth_root: Path) -> None:
    ds = DAVIS2017(synth_root)
    assert ds.sequences == [clip_name(0), clip_name(1)]
    meta = json.loads((synth_root / "DAVIS" / "synthetic_clips.json").read_text())
    assert meta["frames"] == FRAMES
    for i, name in enumerate(ds.sequences):
        images, masks = render_clip("easy", i, FRAMES)
        assert np.array_equal(ds.annotations(name), masks)
        assert ds.num_objects(name) == masks[0].max()
        frames = ds.frames(name)
        assert len(frames) == FRAMES
        assert np.abs(frames[2].astype(int) - images[2]).mean() < 4


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

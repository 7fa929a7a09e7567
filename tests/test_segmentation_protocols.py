"""Segmentation protocols beyond the linear probe: matching, readers, FCN, presets, seg-nn, seg-cluster."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from densessl.config import ConfigError
from densessl.data.base import CorruptImageError, DataError
from densessl.data.segsets import (
    ADE20K,
    Cityscapes,
    COCOStuff,
    LeopartVOC,
    voc_segmentation,
    write_ade20k_fixture,
    write_cityscapes_fixture,
    write_cocostuff_fixture,
    write_leopart_voc_fixture,
)
from densessl.eval.clustering import evaluate_clusters, run_clustering, segment_retrieval
from densessl.eval.metrics import (
    UNMATCHED,
    ConfusionMatrix,
    hungarian_match,
    many_to_one_match,
    overlap_matrix,
    remap,
)
from densessl.eval.retrieval import build_memory, evaluate_nn, nn_label_maps, patch_soft_labels
from densessl.eval.segmentation import (
    FCNHead,
    evaluate_probe,
    resolve_preset,
    run_probe,
    train_fcn_probe,
)
from densessl.eval.segmentation_cli import add_commands, load_segmentation_data
from tests.helpers import TinyBackbone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny; on a loaded 2-core machine a second intra-op thread only adds
    # spin-waiting (an FCN probe step went from ~4 ms to ~50 ms).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# matching
# ----------------------------------------------------------------------------------------------


def _pairs(overlap: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (cluster, class) pixel lists realising an overlap table, plus two ignored pixels."""
    pred, target = [], []
    for k, row in enumerate(overlap):
        for c, count in enumerate(row):
            pred += [k] * count
            target += [c] * count
    return np.array(pred + [0, 1]), np.array(target + [255, 255])


def test_overlap_matrix_skips_ignore() -> None:
    pred, target = _pairs([[4, 0], [3, 3], [0, 1]])
    assert overlap_matrix(pred, target, 3, 2).tolist() == [[4, 0], [3, 3], [0, 1]]


def test_hungarian_hand_computed_with_unmatched_cluster() -> None:
    # Cluster sizes 4, 6, 1; class sizes 7, 4. IoUs: (0,0)=4/7, (1,1)=3/7, (1,0)=3/10, (2,1)=1/4.
    # Best one-to-one: 0->0, 1->1 (sum 1.0); cluster 2 is left over.
    pred, target = _pairs([[4, 0], [3, 3], [0, 1]])
    assert hungarian_match(pred, target, 3, 2).tolist() == [0, 1, UNMATCHED]
    assert hungarian_match(pred, target, 3, 2, unmatched=0).tolist() == [0, 1, 0]  # Leopart: background


def test_hungarian_iou_and_pixel_objectives_differ() -> None:
    # Row sums 11, 6, 8; column sums 13, 3, 9.
    # identity: pixels 8+0+7 = 15, IoU 8/16 + 0 + 7/10 = 1.200
    # 0->1, 1->0, 2->2: pixels 2+5+7 = 14, IoU 2/12 + 5/14 + 7/10 = 1.224
    pred, target = _pairs([[8, 2, 1], [5, 0, 1], [0, 1, 7]])
    assert hungarian_match(pred, target, 3, 3).tolist() == [1, 0, 2]
    assert hungarian_match(pred, target, 3, 3, objective="pixels").tolist() == [0, 1, 2]


def test_hungarian_fewer_clusters_than_classes() -> None:
    pred, target = _pairs([[1, 5, 0], [0, 1, 6]])
    assert hungarian_match(pred, target, 2, 3).tolist() == [1, 2]


def test_many_to_one_precision_iou_and_empty_cluster() -> None:
    # Cluster 0: 5 px of class 0, 4 of class 1; class 0 has 100 px in all. Precision: class 0
    # (5/9 > 4/9); IoU: class 1 (4/9 against 5/104). Cluster 2 has no counted pixel.
    pred, target = _pairs([[5, 4], [95, 0]])
    pred = np.concatenate([pred, [2, 2]])
    target = np.concatenate([target, [255, 255]])
    assert many_to_one_match(pred, target, 3, 2).tolist() == [0, 0, UNMATCHED]
    assert many_to_one_match(pred, target, 3, 2, criterion="iou").tolist() == [1, 0, UNMATCHED]


def test_remap_keeps_type_and_checks_range() -> None:
    mapping = np.array([2, 0, UNMATCHED])
    assert remap(np.array([[0, 1], [2, 0]]), mapping).tolist() == [[2, 0], [-1, 2]]
    out = remap(torch.tensor([1, 0]), mapping)
    assert isinstance(out, torch.Tensor) and out.tolist() == [0, 2]
    with pytest.raises(ValueError):
        remap(np.array([3]), mapping)


def test_confusion_matrix_counts_unmatched_as_wrong() -> None:
    cm = ConfusionMatrix(2, unmatched_index=UNMATCHED)
    cm.update(torch.tensor([0, -1, 1, -1, 0]), torch.tensor([0, 0, 1, 1, 255]))
    r = cm.compute()
    # class 0: TP 1, FN 1 (unmatched), FP 0 -> 1/2; class 1 likewise.
    assert r["iou_per_class"] == pytest.approx([0.5, 0.5])
    assert r["pixel_acc"] == pytest.approx(0.5) and r["num_unmatched"] == 2 and r["num_pixels"] == 4
    assert cm.unmatched.tolist() == [1, 1] and cm.matrix.sum() == 2
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update(torch.tensor([-1]), torch.tensor([0]))
    with pytest.raises(ValueError):
        ConfusionMatrix(2, unmatched_index=1)


# ----------------------------------------------------------------------------------------------
# readers on fixtures
# ----------------------------------------------------------------------------------------------


def _raw(path) -> tuple[np.ndarray, str]:
    with Image.open(path) as img:
        return np.array(img), img.mode


def test_ade20k_reduces_zero_label(tmp_path) -> None:
    root = write_ade20k_fixture(tmp_path)
    assert (root / "images/training/ADE_train_00000001.jpg").is_file()
    assert (root / "annotations/validation/ADE_val_00000002.png").is_file()
    ds = ADE20K(tmp_path, "train")
    assert len(ds) == 3 and ds.num_classes == 150 and ds.class_names[0] == "object1;thing1"
    raw, mode = _raw(ds.mask_path(0))
    assert mode == "L" and (raw == 0).any() and (raw == 150).any()
    image, mask = ds[0]
    assert image.shape == (40, 48, 3) and mask.dtype == np.uint8
    assert (mask[raw == 0] == 255).all()
    assert (mask[raw == 150] == 149).all() and (mask[raw == 1] == 0).all()
    assert np.array_equal(mask[raw > 0], raw[raw > 0] - 1)
    full = ADE20K(root, "validation", reduce_zero_label=False)
    assert full.num_classes == 151 and np.array_equal(full.load_mask(0), _raw(full.mask_path(0))[0])


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path) -> None:
    root = write_cityscapes_fixture(tmp_path)
    ds = Cityscapes(root, "train")
    assert len(ds) == 2 and ds.num_classes == 19
    assert ds.describe(0).endswith("aachen_000000_000019_leftImg8bit.png")
    raw, mode = _raw(ds.mask_path(0))
    assert mode == "L" and ds.mask_path(0).name.endswith("_gtFine_labelIds.png")
    mask = ds.load_mask(0)
    expected = {7: 0, 8: 1, 11: 2, 17: 5, 21: 8, 23: 10, 24: 11, 26: 13, 33: 18}
    for label_id in np.unique(raw):
        assert (mask[raw == label_id] == expected.get(int(label_id), 255)).all()
    assert (raw == 0).any() or (raw == 4).any() or (raw == 9).any()  # ignored ids do occur
    converted = Cityscapes(tmp_path, "train", masks="labelTrainIds")
    assert converted.mask_path(1).name.endswith("_gtFine_labelTrainIds.png")
    for i in range(2):
        assert np.array_equal(converted.load_mask(i), ds.load_mask(i))
    instances, inst_mode = _raw(next((root / "gtFine/val/frankfurt").glob("*_gtFine_instanceIds.png")))
    assert inst_mode.startswith("I") and instances.max() >= 24000


def test_cocostuff_and_unsupported_coarse_classes(tmp_path) -> None:
    root = write_cocostuff_fixture(tmp_path)
    ds = COCOStuff(root, "val")
    assert len(ds) == 2 and ds.num_classes == 171
    assert ds.mask_path(0).name == ds.image_path(0).stem + "_labelTrainIds.png"
    raw, mode = _raw(ds.mask_path(0))
    assert mode == "L" and np.array_equal(ds[0][1], raw) and set(np.unique(raw)) <= set(range(171)) | {255}
    with pytest.raises(DataError, match="27"):
        COCOStuff(root, "val", classes=27)


def test_leopart_voc_layout(tmp_path) -> None:
    root = write_leopart_voc_fixture(tmp_path)
    trainaug = LeopartVOC(tmp_path, "trainaug")
    assert len(trainaug) == 5 and trainaug.num_classes == 21
    assert all(_raw(trainaug.mask_path(i))[1] == "L" for i in range(5))
    val = LeopartVOC(root, "val")
    raw, mode = _raw(val.mask_path(0))
    assert mode == "P" and (raw == 255).any() and np.array_equal(val[0][1], raw)
    train = LeopartVOC(root, "train")
    assert train.mask_path(0).parent.name == "SegmentationClass"
    # A VOC train stem's aug mask holds the same labels as its SegmentationClass mask.
    assert np.array_equal(trainaug.load_mask(0), train.load_mask(0))
    assert not (trainaug.load_mask(4) == 255).any()  # SBD masks have no void band


def test_voc_devkit_aug_split(tmp_path) -> None:
    from densessl.data.synthetic import save_palette_png

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 2:6] = 7
    a, b = "2007_000032", "2008_000002"  # PASCAL's image names: the 21 VOC classes, no labels.txt
    for stem in (a, b):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{stem}.jpg")
        Image.fromarray(mask, mode="L").save(voc / "SegmentationClassAug" / f"{stem}.png")
    save_palette_png(mask, voc / "SegmentationClass" / f"{a}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text(f"{a}\n")
    (voc / "ImageSets/Segmentation/aug.txt").write_text(f"{a}\n{b}\n")
    aug = voc_segmentation(tmp_path, "trainaug")
    assert len(aug) == 2 and np.array_equal(aug[1][1], mask)
    assert len(voc_segmentation(tmp_path, "train")) == 1


def test_reader_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="ADE20K"):
        ADE20K(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="Cityscapes"):
        Cityscapes(tmp_path, "train")
    root = write_ade20k_fixture(tmp_path, n_train=2, n_val=1)
    with pytest.raises(DataError, match="split folder"):
        ADE20K(root, "test")
    ds = ADE20K(root, "train")
    ds.image_path(1).write_bytes(b"not a jpeg")
    with pytest.raises(CorruptImageError):
        ds[1]
    bad = np.full((4, 4), 200, dtype=np.uint8)
    Image.fromarray(bad, mode="L").save(ds.mask_path(0))
    with pytest.raises(DataError, match="label 200"):
        ds.load_mask(0)
    ds.mask_path(0).unlink()
    with pytest.raises(DataError, match="missing"):
        ADE20K(root, "train")


# ----------------------------------------------------------------------------------------------
# FCN head and presets
# ----------------------------------------------------------------------------------------------


def _stripes(n: int, k: int, seed: int, grid: int = 8, cell: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical-stripe masks (n, grid*cell, grid*cell) and one-hot (n, k, grid, grid) features.

    Stripes keep bilinear upsampling one-dimensional, so the cell a pixel lies in always wins.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (n, 1, grid), generator=gen).expand(n, grid, grid)
    masks = coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2).to(torch.uint8)
    feats = F.one_hot(coarse, k).permute(0, 3, 1, 2).float().contiguous()
    return feats, masks


def test_presets_resolve() -> None:
    leo = resolve_preset("leopart", arch="resnet50")
    assert (leo["image_size"], leo["train_resolution"], leo["epochs"], leo["batch_size"]) == (
        448,
        100,
        25,
        60,
    )
    assert leo["lr"] == 0.1 and leo["seeds"] == (400,) and leo["milestones"] is None
    assert resolve_preset("leopart", arch="vit_small")["lr"] == 0.01
    d = resolve_preset(None, dataset_image_size=64, epochs=None, head="fcn")
    assert d["image_size"] == 64 and d["train_resolution"] == 32 and d["epochs"] == 25 and d["head"] == "fcn"
    with pytest.raises(ConfigError, match="preset"):
        resolve_preset("nope")
    with pytest.raises(ConfigError, match="setting"):
        resolve_preset("leopart", colour=3)
    with pytest.raises(ConfigError, match="image size"):
        resolve_preset("default")


def test_fcn_head_learns_and_is_deterministic() -> None:
    k = 3
    train_f, train_m = _stripes(60, k, 0)
    val_f, val_m = _stripes(20, k, 1)
    train_m[:, :2] = 255
    kw = dict(seed=3, epochs=6, lr=0.05, batch_size=16, train_resolution=16, channels=16)
    state = torch.random.get_rng_state()
    a = train_fcn_probe(train_f * 30 + 2, train_m, k, **kw)
    assert torch.equal(state, torch.random.get_rng_state())
    b = train_fcn_probe(train_f * 30 + 2, train_m, k, **kw)
    x = val_f[:2] * 30 + 2
    assert torch.equal(a(x), b(x))
    r = evaluate_probe(a, val_f * 30 + 2, val_m, k)
    assert r["miou"] > 0.95
    head = FCNHead(5, 4, channels=8)
    assert head(torch.randn(2, 5, 6, 6)).shape == (2, 4, 6, 6)


def test_leopart_preset_and_fcn_run_on_tiny_backbone() -> None:
    rng = np.random.default_rng(0)
    samples = [
        (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 3, (32, 32)).astype(np.uint8))
    ]
    samples = samples * 6
    s = resolve_preset("leopart", image_size=32, train_resolution=16, epochs=2, batch_size=4)
    for head in ("linear", "fcn"):
        r = run_probe(
            TinyBackbone(),
            samples,
            samples[:2],
            3,
            head=head,
            image_size=s["image_size"],
            seeds=s["seeds"],
            epochs=s["epochs"],
            lr=s["lr"],
            batch_size=s["batch_size"],
            train_resolution=s["train_resolution"],
            standardize=s["standardize"],
            fcn_channels=8,
        )
        assert r["head"] == head and r["seeds"] == [400] and r["feature_shape"] == [8, 16, 16]
        assert 0.0 <= r["miou"] <= 1.0 and r["image_size"] == 32 and r["train_resolution"] == 16


# ----------------------------------------------------------------------------------------------
# seg-nn
# ----------------------------------------------------------------------------------------------


def test_soft_labels_hand_computed() -> None:
    masks = torch.tensor([[[1, 255], [1, 2]]], dtype=torch.uint8)
    zero = patch_soft_labels(masks, 3, (1, 1))
    skip = patch_soft_labels(masks, 3, (1, 1), void="skip")
    assert zero[0, 0, 0].tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert skip[0, 0, 0].tolist() == pytest.approx([0.0, 2 / 3, 1 / 3])
    void = torch.full((1, 2, 2), 255, dtype=torch.uint8)
    assert patch_soft_labels(void, 3, (1, 1), void="skip").sum() == 0


def test_nn_retrieval_one_hot_features_score_100() -> None:
    k = 4
    train_f, train_m = _stripes(30, k, 0)
    val_f, val_m = _stripes(10, k, 1)
    r = evaluate_nn(train_f, train_m, val_f * 5.0, val_m, k)
    assert r["miou"] == 1.0 and r["pixel_acc"] == 1.0
    assert r["memory_size"] == 30 * 64 and r["k"] == 30 and r["temperature"] == 0.02
    assert isinstance(r["seconds"], float)
    small = evaluate_nn(train_f, train_m, val_f, val_m, k, patches_per_image=5, k=3)
    assert small["memory_size"] == 150 and small["miou"] == 1.0


def test_nn_chunked_search_is_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    _, masks = _stripes(10, 3, 0, grid=4)
    keys, values = build_memory(torch.randn(10, 6, 4, 4, generator=gen), masks, 3)
    queries = torch.randn(3, 6, 4, 4, generator=gen)
    whole = nn_label_maps(queries, keys, values, k=7)
    chunked = nn_label_maps(queries, keys, values, k=7, memory_chunk=9)
    torch.testing.assert_close(whole, chunked)
    assert whole.shape == (3, 3, 4, 4)
    torch.testing.assert_close(whole.sum(dim=1), torch.ones(3, 4, 4))


# ----------------------------------------------------------------------------------------------
# seg-cluster
# ----------------------------------------------------------------------------------------------


def _planted(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block masks and features drawn tightly around one random centre per class."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (n, 8, 8), generator=gen)
    masks = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2).to(torch.uint8)
    centres = torch.randn(k, 12, generator=torch.Generator().manual_seed(99)) * 5
    feats = centres[coarse].permute(0, 3, 1, 2) + 0.05 * torch.randn(n, 12, 8, 8, generator=gen)
    return feats.contiguous(), masks


def test_planted_clusters_score_100() -> None:
    feats, masks = _planted(16, 4, 0)
    masks[:, :2] = 255
    r = run_clustering(feats, masks, 4, seeds=(0, 1), n_init=1, pca_dim=5)
    (hung, many) = r["clusterings"]
    assert (hung["k"], hung["matching"], many["k"], many["matching"]) == (4, "hungarian", 16, "many-to-one")
    assert hung["miou"] == 1.0 and hung["miou_per_seed"] == [1.0, 1.0] and many["pixel_acc"] == 1.0
    assert r["pca_dim"] == 5 and r["feature_shape"] == [12, 8, 8] and r["eval_resolution"] == 32


def test_evaluate_clusters_forced_hungarian_with_extra_clusters() -> None:
    # Two clusters on class 0's pixels: Hungarian keeps one, the other's pixels count as wrong.
    maps = torch.tensor([[[0, 1], [2, 2]]])
    masks = torch.tensor([[[0, 0], [1, 1]]], dtype=torch.uint8)
    r = evaluate_clusters(maps, masks, 3, 2, matching="hungarian")
    assert r["mapping"] in ([0, UNMATCHED, 1], [UNMATCHED, 0, 1])
    assert r["iou_per_class"] == pytest.approx([0.5, 1.0]) and r["num_unmatched"] == 1
    many = evaluate_clusters(maps, masks, 3, 2)
    assert many["matching"] == "many-to-one" and many["miou"] == 1.0


def test_segment_retrieval_oracle_regions() -> None:
    feats, masks = _planted(12, 4, 0)
    vfeats, vmasks = _planted(6, 4, 1)
    r = segment_retrieval(feats, masks, vfeats, vmasks, 4, regions="classes", subset=[1, 3])
    assert r["miou"] == 1.0 and r["miou_subset"] == 1.0 and r["subset"] == [1, 3]
    # Foreground regions with one object class per image: background 0 plus class 1 or 2.
    fg = torch.zeros(8, 32, 32, dtype=torch.uint8)
    fg[:, 8:24, 8:24] = torch.tensor([1, 2] * 4, dtype=torch.uint8).view(8, 1, 1)
    fg_feats = _planted(8, 4, 2)[0] * 0
    fg_feats[:, 0, 2:6, 2:6] = (fg[:, 8, 8] == 1).float().view(8, 1, 1)
    fg_feats[:, 1, 2:6, 2:6] = (fg[:, 8, 8] == 2).float().view(8, 1, 1)
    r = segment_retrieval(fg_feats[:4], fg[:4], fg_feats[4:], fg[4:], 3, regions="foreground")
    assert r["miou"] == 1.0 and r["memory_size"] == 4 and r["num_queries"] == 4


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

TINY = ["--weights", "random", "--arch", "resnet18", "--small-input", "--width", "0.125"]
SYNTH = ["--data", "synthetic:easy", "--synthetic-train", "12", "--synthetic-val", "6"]


def _run(argv: list[str], capsys) -> dict:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_cli_seg_probe_linear_and_fcn(tmp_path, capsys) -> None:
    argv = ["seg-probe", *TINY, *SYNTH, "--epochs", "2", "--seeds", "0", "1", "--cache-dir", str(tmp_path)]
    r = _run(argv, capsys)
    assert r["protocol"] == "seg-probe" and r["weights"] == "random" and r["data"] == "synthetic:easy"
    for key in ("miou", "miou_std", "miou_per_seed", "pixel_acc", "iou_per_class", "num_classes", "seconds"):
        assert key in r
    assert (
        r["num_classes"] == 7
        and r["image_size"] == 64
        and r["train_resolution"] == 32
        and r["head"] == "linear"
    )
    assert len(list(tmp_path.glob("*.pt"))) == 2
    r = _run(
        ["seg-probe", *TINY, *SYNTH, "--head", "fcn", "--fcn-channels", "8", "--epochs", "1", "--seeds", "0"],
        capsys,
    )
    assert r["head"] == "fcn" and 0.0 <= r["miou"] <= 100.0


def test_cli_seg_nn_on_synthetic_and_leopart_layout(tmp_path, capsys) -> None:
    r = _run(["seg-nn", *TINY, *SYNTH, "--k", "5"], capsys)
    assert r["protocol"] == "seg-nn" and r["k"] == 5 and r["memory_size"] == 12 * 64 and r["void"] == "zero"
    assert r["image_size"] == 64 and r["eval_resolution"] == [64, 64] and r["num_classes"] == 7
    root = write_leopart_voc_fixture(tmp_path)
    data = ["--data", f"leopart-voc:{root}", "--train-split", "trainaug", "--image-size", "32"]
    r = _run(["seg-nn", *TINY, *data], capsys)
    assert r["num_classes"] == 21 and r["num_train"] == 5 and r["num_val"] == 2 and 0 <= r["miou"] <= 100


def test_cli_seg_nn_prints_the_library_figures_in_percent(capsys) -> None:
    from densessl.eval.cli_common import backbone_from_args
    from densessl.eval.retrieval import run_nn_retrieval

    argv = ["seg-nn", *TINY, *SYNTH, "--k", "5"]
    printed = _run(argv, capsys)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="protocol", required=True))
    args = parser.parse_args(argv)
    data = load_segmentation_data("synthetic:easy", synthetic_train=12, synthetic_val=6)
    raw = run_nn_retrieval(
        backbone_from_args(args), data.train, data.val, data.num_classes, image_size=64, k=5, void="zero"
    )
    assert printed["unit"] == "percent"
    assert printed["miou"] == pytest.approx(100 * raw["miou"]) and raw["miou"] > 0.01
    assert printed["pixel_acc"] == pytest.approx(100 * raw["pixel_acc"])
    assert printed["iou_per_class"] == pytest.approx([100 * v for v in raw["iou_per_class"]])
    assert printed["k"] == raw["k"] and printed["num_pixels"] == raw["num_pixels"]


def test_to_percent_scales_fractions_at_any_depth_and_nothing_else() -> None:
    from densessl.eval.segmentation_cli import to_percent

    result = {
        "miou": 0.25,
        "num_classes": 7,
        "k": 7,
        "absent": "zero",
        "miou_per_seed": [0.2, 0.3],
        "clusterings": [{"k": 7, "miou": 0.5, "pixel_acc_std": 0.01, "iou_per_class": [1.0, float("nan")]}],
        "retrieval": {"miou": 0.1, "miou_subset": None, "num_queries": 4, "subset": [1, 3]},
        "eval_resolution": [64, 64],
    }
    out = to_percent(result)
    assert out["miou"] == 25.0 and out["miou_per_seed"] == [20.0, 30.0]
    assert out["num_classes"] == 7 and out["k"] == 7 and out["absent"] == "zero"
    assert out["clusterings"][0]["miou"] == 50.0 and out["clusterings"][0]["pixel_acc_std"] == 1.0
    assert out["clusterings"][0]["iou_per_class"][0] == 100.0
    assert np.isnan(out["clusterings"][0]["iou_per_class"][1]) and out["clusterings"][0]["k"] == 7
    assert out["retrieval"] == {"miou": 10.0, "miou_subset": None, "num_queries": 4, "subset": [1, 3]}
    assert out["eval_resolution"] == [64, 64] and result["miou"] == 0.25  # the input is left alone


def test_cli_seg_cluster(tmp_path, capsys) -> None:
    argv = ["seg-cluster", *TINY, *SYNTH, "--seeds", "0", "1", "--n-init", "1", "--clusters", "7", "14"]
    r = _run(argv, capsys)
    assert r["protocol"] == "seg-cluster" and [c["k"] for c in r["clusterings"]] == [7, 14]
    assert r["miou"] == r["clusterings"][0]["miou"] and r["retrieval"]["regions"] == "foreground"
    assert 0.0 <= r["retrieval"]["miou"] <= 100.0 and r["eval_resolution"] == 64
    root = write_ade20k_fixture(tmp_path)
    data = ["--data", f"ade20k:{root}", "--image-size", "32"]
    r = _run(["seg-cluster", *TINY, *data, "--seeds", "0", "--n-init", "1", "--clusters", "4"], capsys)
    assert r["num_classes"] == 150 and r["retrieval"]["regions"] == "classes"
    assert r["clusterings"][0]["matching"] == "hungarian" and r["num_val"] == 2


def test_cli_data_errors() -> None:
    with pytest.raises(DataError, match="voc:ROOT or synthetic"):
        load_segmentation_data("imagenet:/x")
    with pytest.raises(DataError, match="preset"):
        load_segmentation_data("synthetic:nope")
    with pytest.raises(DataError):
        load_segmentation_data("cityscapes:/does/not/exist")

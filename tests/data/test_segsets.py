"""Segmentation readers on written fixtures: ADE20K, Cityscapes, COCO-Stuff, Leopart's VOC, VOC aug."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

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
from tests.helpers import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny; on a loaded 2-core machine a second intra-op thread only adds
    # spin-waiting (an FCN probe step went from ~4 ms to ~50 ms).
    with torch_threads(1):
        yield


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

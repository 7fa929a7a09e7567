"""The classification readers (VOC07 layout, image folders) and their fixtures."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from densessl.data.base import DataError
from densessl.data.classification import (
    VOC07_CLASSES,
    ImageFolderClassification,
    VOC07Classification,
    write_image_folder_fixture,
    write_voc07_fixture,
)
from tests.helpers import torch_threads

STANDARD_ORDER = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip


IMAGE_SIZE = 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny problems: thread pools (torch, BLAS) only add start-up and contention on a shared machine
    with torch_threads(1), threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("voc07")
    voc = write_voc07_fixture(out, n_train=30, n_val=30, n_test=40, image_size=IMAGE_SIZE)
    assert voc == out / "VOCdevkit" / "VOC2007"
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("folders")
    write_image_folder_fixture(out / "train", per_class=8, image_size=40)
    write_image_folder_fixture(out / "val", per_class=6, image_size=40, seed=1)
    return out


def _labels_from_annotations(voc: Path, stem: str) -> np.ndarray:
    row = np.full(20, -1, dtype=np.int8)
    for obj in ET.parse(voc / "Annotations" / f"{stem}.xml").getroot().iter("object"):
        c = STANDARD_ORDER.index(obj.findtext("name"))
        if obj.findtext("difficult") == "0":
            row[c] = 1
        elif row[c] != 1:
            row[c] = 0
    return row


def test_voc07_reader_reads_the_fixture_back(voc_root: Path) -> None:
    voc = voc_root / "VOCdevkit" / "VOC2007"
    assert list(VOC07_CLASSES) == STANDARD_ORDER
    for split, n in (("train", 30), ("val", 30), ("trainval", 60), ("test", 40)):
        ds = VOC07Classification(voc_root, split)
        assert ds.classes == STANDARD_ORDER and len(ds) == n
        assert ds.labels.shape == (n, 20) and ds.labels.dtype == np.int8
        for i, stem in enumerate(ds.stems):
            np.testing.assert_array_equal(ds.labels[i], _labels_from_annotations(voc, stem))
        # every class is present in every split
        assert ((ds.labels == 1).sum(axis=0) >= 1).all()
    trainval = VOC07Classification(voc / "..", "trainval")  # VOCdevkit itself also works
    assert (trainval.labels == 0).any(), "the fixture has difficult-only labels"
    assert trainval.stems == VOC07Classification(voc, "train").stems + VOC07Classification(voc, "val").stems
    # the devkit's text format: "<stem> <label:2d>"
    first = (voc / "ImageSets" / "Main" / "aeroplane_trainval.txt").read_text().splitlines()[0]
    assert first == f"{trainval.stems[0]}  1"
    image, row = trainval[0]
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(row, trainval.labels[0])
    assert trainval.describe(0).endswith(f"JPEGImages/{trainval.stems[0]}.jpg")


def test_voc07_reader_errors(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no PASCAL VOC 2007 folder"):
        VOC07Classification(tmp_path / "missing", "test")
    with pytest.raises(DataError, match="missing"):
        VOC07Classification(voc_root, "nosuchsplit")
    copy = tmp_path / "copy"
    shutil.copytree(voc_root, copy)
    voc = copy / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main" / "cat_test.txt").unlink()
    with pytest.raises(DataError, match="cat_test.txt"):
        VOC07Classification(copy, "test")
    ds = VOC07Classification(copy, "train")
    bad = voc / "JPEGImages" / f"{ds.stems[1]}.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=bad.name):
        ds[1]
    bad.unlink()
    with pytest.raises(DataError, match="missing"):
        VOC07Classification(copy, "train")


CUSTOM = {"aeroplane": "glider", "bicycle": "tandem", "bird": "kite"}


def custom_voc07(voc_root: Path, tmp_path: Path) -> Path:
    """A custom data set in the VOC07 layout, without labels.txt: three of the fixture's classes
    under other names, the other class files removed."""
    copy = tmp_path / "custom"
    shutil.copytree(voc_root, copy)
    main = copy / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    for path in main.glob("*_*.txt"):
        name, split = path.stem.rsplit("_", 1)
        if name in CUSTOM:
            path.rename(main / f"{CUSTOM[name]}_{split}.txt")
        else:
            path.unlink()
    return copy


def test_voc07_layout_without_labels_txt_names_its_classes(voc_root: Path, tmp_path: Path) -> None:
    copy = custom_voc07(voc_root, tmp_path)
    pascal = VOC07Classification(voc_root, "train")
    ds = VOC07Classification(copy, "train")
    assert ds.classes == ["glider", "kite", "tandem"]  # sorted
    columns = [STANDARD_ORDER.index(n) for n in ("aeroplane", "bird", "bicycle")]
    np.testing.assert_array_equal(ds.labels, pascal.labels[:, columns])


def test_image_folder_reader(folders: Path, tmp_path: Path) -> None:
    ds = ImageFolderClassification(folders / "train")
    assert ds.classes == sorted(["circle", "square", "wide", "tall", "small"])
    assert len(ds) == 40 and np.bincount(ds.labels).tolist() == [8] * 5
    # images in sub/ folders are found too, and labels follow the folder
    assert any("/sub/" in ds.describe(i) for i in range(len(ds)))
    for i in (0, 17, 39):
        image, label = ds[i]
        assert image.shape == (40, 40, 3) and label == ds.labels[i]
        assert f"/{ds.classes[label]}/" in ds.describe(i)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderClassification(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderClassification(tmp_path / "empty")
    copy = tmp_path / "copy"
    shutil.copytree(folders / "train", copy)
    (copy / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra contains no images"):
        ImageFolderClassification(copy)
    (copy / "zebra").rmdir()
    corrupt = copy / "wide" / "0000.jpg"
    corrupt.write_bytes(b"\xff\xd8 truncated")
    ds = ImageFolderClassification(copy)
    index = next(i for i in range(len(ds)) if ds.describe(i) == str(corrupt))
    with pytest.raises(DataError, match="0000.jpg"):
        ds[index]

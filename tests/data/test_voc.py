"""PASCAL VOC 2012 layout: the synthetic writer and the reader, palette and error handling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densessl.data import (
    VOC_CLASSES,
    DataError,
    SynthConfig,
    SyntheticScenes,
    VOCSegmentation,
    class_names,
    render_scene,
    scene_seed,
    voc_colormap,
    write_voc,
)
from densessl.data.synthetic import save_palette_png

CONFIG = SynthConfig(image_size=32, seed=5, num_classes=5)


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthvoc")
    root = write_voc(out, CONFIG, n_train=4, n_val=3)
    assert root == out / "VOCdevkit" / "VOC2012"
    return out


def test_voc_colormap_known_entries() -> None:
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    known = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        8: (64, 0, 0),
        15: (192, 128, 128),
        20: (0, 64, 128),
        255: (224, 224, 192),
    }
    for index, rgb in known.items():
        assert tuple(cmap[index]) == rgb, index
    assert len({tuple(c) for c in cmap}) == 256


def test_written_layout(voc_dir: Path) -> None:
    root = voc_dir / "VOCdevkit" / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    train = (sets / "train.txt").read_text().split()
    val = (sets / "val.txt").read_text().split()
    assert len(train) == 4 and len(val) == 3 and not set(train) & set(val)
    assert (sets / "trainval.txt").read_text().split() == train + val
    assert (root / "labels.txt").read_text().splitlines() == class_names(CONFIG)
    stem = train[0]
    with Image.open(root / "JPEGImages" / f"{stem}.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 32)
    for folder in ("SegmentationClass", "SegmentationObject"):
        with Image.open(root / folder / f"{stem}.png") as img:
            assert img.mode == "P"
            palette = np.array(img.getpalette()[: 256 * 3], dtype=np.uint8).reshape(256, 3)
            np.testing.assert_array_equal(palette, voc_colormap())


def test_reader_matches_rendering(voc_dir: Path) -> None:
    for split, n in (("train", 4), ("val", 3)):
        ds = VOCSegmentation(voc_dir, split)
        assert len(ds) == n
        assert ds.num_classes == CONFIG.num_classes + 1
        assert ds.class_names == class_names(CONFIG)
        scenes = SyntheticScenes(CONFIG, split, n)
        for i in range(n):
            image, mask = ds[i]
            ref_image, ref_mask = scenes[i]
            assert image.dtype == mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, ref_mask)  # lossless PNG indices
            assert 255 in mask
            # JPEG at quality 95 is close to, not equal to, the rendered image
            assert np.abs(image.astype(int) - ref_image.astype(int)).mean() < 5
    obj = np.array(Image.open(voc_dir / "VOCdevkit/VOC2012/SegmentationObject/val_000002.png"))
    np.testing.assert_array_equal(obj, render_scene(CONFIG, scene_seed("val", 2))[2])


@pytest.mark.parametrize("level", ["parent", "VOCdevkit", "VOC2012"])
def test_root_may_be_any_level(voc_dir: Path, level: str) -> None:
    root = {
        "parent": voc_dir,
        "VOCdevkit": voc_dir / "VOCdevkit",
        "VOC2012": voc_dir / "VOCdevkit" / "VOC2012",
    }[level]
    ds = VOCSegmentation(root, "trainval")
    assert len(ds) == 7 and ds.root == voc_dir / "VOCdevkit" / "VOC2012"
    assert ds.describe(0).endswith("train_000000.jpg")
    assert ds.load(6).shape == (32, 32, 3)


def _real_voc_fixture(tmp_path: Path) -> Path:
    """Two VOC-style images; the second mask uses a palette whose colours are not the VOC ones."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[1:4, 2:6] = 15
    mask[0, :] = 255
    for stem in ("2007_000032", "2007_000033"):
        Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
    save_palette_png(mask, root / "SegmentationClass" / "2007_000032.png")
    odd = Image.frombytes("P", (8, 6), np.where(mask == 255, 255, mask // 5).astype(np.uint8).tobytes())
    odd.putpalette([255 - (i % 256) for i in range(768)])
    odd.save(root / "SegmentationClass" / "2007_000033.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000032\n2007_000033\n")
    return root


def test_real_voc_reads_palette_indices(tmp_path: Path) -> None:
    root = _real_voc_fixture(tmp_path)
    ds = VOCSegmentation(tmp_path, "val")
    assert ds.num_classes == 21 and ds.class_names == list(VOC_CLASSES)
    image, mask = ds[0]
    assert image.shape == (6, 8, 3)
    assert mask[2, 3] == 15 and mask[0, 0] == 255 and mask[5, 0] == 0
    _, mask2 = ds[1]
    assert mask2[2, 3] == 3 and mask2[0, 0] == 255  # indices, whatever the palette colours
    # an RGB mask is rejected instead of being silently misread
    Image.open(root / "SegmentationClass" / "2007_000032.png").convert("RGB").save(
        root / "SegmentationClass" / "2007_000032.png"
    )
    with pytest.raises(DataError, match="mode 'RGB'"):
        ds[0]


def test_aug_masks_in_l_mode(tmp_path: Path) -> None:
    root = _real_voc_fixture(tmp_path)
    (root / "SegmentationClassAug").mkdir()
    for stem in ("2007_000032", "2007_000033"):
        Image.fromarray(np.full((6, 8), 7, np.uint8)).save(root / "SegmentationClassAug" / f"{stem}.png")
    ds = VOCSegmentation(root, "val", mask_dir="SegmentationClassAug")
    assert (ds[1][1] == 7).all()


def test_missing_split_image_or_mask(tmp_path: Path) -> None:
    root = _real_voc_fixture(tmp_path)
    with pytest.raises(DataError, match=r"train\.txt.*available splits: val"):
        VOCSegmentation(root, "train")
    (root / "SegmentationClass" / "2007_000033.png").unlink()
    with pytest.raises(DataError, match="mask.*2007_000033"):
        VOCSegmentation(root, "val")
    (root / "JPEGImages" / "2007_000032.jpg").unlink()
    with pytest.raises(DataError, match="image.*2007_000032"):
        VOCSegmentation(root, "val")
    with pytest.raises(DataError, match="no PASCAL VOC"):
        VOCSegmentation(tmp_path / "elsewhere", "val")
    shutil.rmtree(root / "ImageSets")
    with pytest.raises(DataError, match="val.txt"):
        VOCSegmentation(root, "val")


def _custom_voc(tmp_path: Path, labels: list[str] | None, stems=("img_a", "img_b"), top: int = 6) -> Path:
    """A custom set in the VOC 2012 layout whose masks use ids 0..``top``."""
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    mask = np.zeros((6, 32), dtype=np.uint8)
    for i, stem in enumerate(stems):
        Image.fromarray(np.full((6, 32, 3), 90, np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
        mask[:, :] = 0
        mask[1:3, : top + 1] = np.arange(top + 1)
        mask[5, i] = 255
        save_palette_png(mask, root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{s}\n" for s in stems))
    if labels is not None:
        (root / "labels.txt").write_text("".join(f"{n}\n" for n in labels))
    return root


def test_a_custom_set_without_labels_txt_is_not_scored_over_pascal_classes(tmp_path: Path) -> None:
    root = _custom_voc(tmp_path, labels=None)
    with pytest.raises(DataError) as info:
        VOCSegmentation(root, "val")
    message = str(info.value)
    assert "no labels.txt" in message and "'img_a'" in message
    assert "masks hold ids 0..6" in message and str(root / "labels.txt") in message
    # with the names written down, the set has exactly its own classes
    (root / "labels.txt").write_text("".join(f"class{i}\n" for i in range(7)))
    ds = VOCSegmentation(root, "val")
    assert ds.num_classes == 7 and ds[0][1].max() == 255


def test_mask_ids_beyond_the_class_list_are_named_with_the_fix(tmp_path: Path) -> None:
    short = _custom_voc(tmp_path / "short", labels=["bg", "a", "b", "c"], top=6)
    with pytest.raises(DataError, match=r"holds class ids 4\.\.6 beyond the 4 classes of .*labels\.txt.*add"):
        VOCSegmentation(short, "val")[0]
    # PASCAL's own image names, no labels.txt, ids PASCAL does not have
    pascal = _custom_voc(tmp_path / "pascal", labels=None, stems=("2007_000032", "2007_000033"), top=22)
    ds = VOCSegmentation(pascal, "val")
    assert ds.class_names == list(VOC_CLASSES)
    with pytest.raises(DataError) as info:
        ds.load_mask(1)
    message = str(info.value)
    assert "holds class ids 21, 22 beyond PASCAL VOC's 21 classes" in message
    assert "cover ids 0..20 (255 = void)" in message and "write" in message and "ids 0..22" in message

"""Image sources: folder scanning, COCO layout, decoding and corruption handling, spec strings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densessl.data import (
    CocoSource,
    CorruptImageError,
    DataError,
    FolderSource,
    ImageSource,
    SyntheticSource,
    decode_image,
    parse_source,
)


def _rgb(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray | None = None, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb() if array is None else array).save(path, format=fmt, **kw)
    return path


# ------------------------------------------------------------------------------ FolderSource


def test_folder_recursive_sorted_and_extension_filter(tmp_path: Path) -> None:
    _save(tmp_path / "b" / "z.png")
    _save(tmp_path / "b" / "a.JPG", fmt="JPEG")
    _save(tmp_path / "a.bmp")
    _save(tmp_path / "a" / "deep" / "x.webp")
    _save(tmp_path / "c.TIFF", fmt="TIFF")
    (tmp_path / "notes.txt").write_text("not an image")
    _save(tmp_path / ".hidden" / "h.png")
    _save(tmp_path / "._resource.jpg", fmt="JPEG")

    src = FolderSource(tmp_path)
    rel = [str(Path(src.describe(i)).relative_to(tmp_path).as_posix()) for i in range(len(src))]
    assert rel == ["a/deep/x.webp", "a.bmp", "b/a.JPG", "b/z.png", "c.TIFF"]
    assert isinstance(src, ImageSource)

    flat = FolderSource(tmp_path, recursive=False)
    assert [Path(flat.describe(i)).name for i in range(len(flat))] == ["a.bmp", "c.TIFF"]


def test_folder_load_returns_exact_rgb(tmp_path: Path) -> None:
    array = _rgb(7, 9, seed=3)
    _save(tmp_path / "img.png", array)
    src = FolderSource(tmp_path)
    out = src.load(0)
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out, array)
    with pytest.raises(IndexError):
        src.load(1)


def test_folder_missing_or_empty_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        FolderSource(missing)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        FolderSource(tmp_path / "empty")


# ------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1"])
def test_decode_converts_modes_to_rgb(tmp_path: Path, mode: str) -> None:
    img = Image.fromarray(_rgb(8, 6)).convert(mode)
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    img.save(path)
    out = decode_image(path)
    assert out.shape == (8, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.array(img.convert("RGB")))


def test_decode_sixteen_bit_grey_is_scaled(tmp_path: Path) -> None:
    grey = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = decode_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_corrupt_files_raise_corrupt_image_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a JPEG")
    buf = io.BytesIO()
    Image.fromarray(_rgb(48, 48)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    _save(tmp_path / "good.jpg", fmt="JPEG")

    src = FolderSource(tmp_path)
    names = [Path(src.describe(i)).name for i in range(len(src))]
    assert names == ["empty.jpg", "good.jpg", "text.jpg", "truncated.jpg"]
    for i, name in enumerate(names):
        if name == "good.jpg":
            assert src.load(i).shape == (12, 10, 3)
            continue
        with pytest.raises(CorruptImageError) as info:
            src.load(i)
        assert info.value.path.endswith(name)
        assert isinstance(info.value, DataError)
    with pytest.raises(CorruptImageError, match="empty"):
        decode_image(tmp_path / "empty.jpg")


# ------------------------------------------------------------------------------ COCO


def _coco(root: Path) -> Path:
    coco = root / "coco"
    for i in (9, 25, 1):
        _save(coco / "train2017" / f"{i:012d}.jpg", fmt="JPEG")
    for i in (3, 2):
        _save(coco / "unlabeled2017" / f"{i:012d}.jpg", fmt="JPEG")
    _save(coco / "val2017" / "000000000005.jpg", fmt="JPEG")
    (coco / "annotations").mkdir()
    return coco


def test_coco_train_and_coco_plus(tmp_path: Path) -> None:
    coco = _coco(tmp_path)
    train = CocoSource(coco)
    assert [Path(train.describe(i)).name for i in range(len(train))] == [
        "000000000001.jpg",
        "000000000009.jpg",
        "000000000025.jpg",
    ]
    plus = CocoSource(coco, splits=("train2017", "unlabeled2017"))
    assert len(plus) == 5
    assert [Path(plus.describe(i)).parent.name for i in range(5)] == ["train2017"] * 3 + ["unlabeled2017"] * 2
    assert Path(plus.describe(3)).name == "000000000002.jpg"
    assert plus.load(4).shape == (12, 10, 3)
    # the folder that contains coco/ works too, and spec strings build the same lists
    assert len(CocoSource(tmp_path)) == 3
    assert [parse_source(f"coco+:{coco}").describe(i) for i in range(5)] == [
        plus.describe(i) for i in range(5)
    ]
    assert len(parse_source(f"coco:{tmp_path}")) == 3


def test_coco_missing_split_names_folder(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    _save(coco / "train2017" / "000000000001.jpg", fmt="JPEG")
    with pytest.raises(DataError, match="unlabeled2017"):
        CocoSource(coco, splits=("train2017", "unlabeled2017"))
    with pytest.raises(DataError, match="does not exist"):
        CocoSource(tmp_path / "missing")


# ------------------------------------------------------------------------------ spec strings


def test_parse_source_kinds(tmp_path: Path) -> None:
    _save(tmp_path / "imgs" / "a.png")
    folder = parse_source(f"folder:{tmp_path / 'imgs'}")
    assert isinstance(folder, FolderSource) and len(folder) == 1

    synth = parse_source("synthetic:easy", length=5, split="val")
    assert isinstance(synth, SyntheticSource) and len(synth) == 5
    assert synth.describe(2) == "synthetic:val:2"
    assert synth.load(0).shape == (64, 64, 3)
    assert parse_source("synthetic", length=3).config.num_classes == 8


@pytest.mark.parametrize("spec", ["imagenet:/data", "/data/images", "", "folder:", "synthetic:nope"])
def test_parse_source_bad_spec_lists_valid_forms(spec: str) -> None:
    with pytest.raises(DataError) as info:
        parse_source(spec)
    message = str(info.value)
    if spec == "synthetic:nope":
        assert "easy" in message and "hard" in message
    else:
        for prefix in ("folder:", "coco:", "coco+:", "synthetic"):
            assert prefix in message

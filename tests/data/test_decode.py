"""Decoding for pre-training: decode_jpeg against PIL, EXIF orientation on every path, the PIL
fallbacks, reduced sizes and corrupt files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from densessl.data import CorruptImageError, DataError, decode_image
from densessl.data.decode import EncodedImage, open_image, read_image


def smooth(height: int, width: int, seed: int = 0, cell: int = 16) -> np.ndarray:
    """Colour content varying over about ``cell`` pixels, which JPEG keeps well (noise would make
    tolerances meaningless)."""
    rows, cols = height // cell + 2, width // cell + 2
    coarse = np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def save(path: Path, image: Image.Image, **kw) -> Path:
    image.save(path, **kw)
    return path


def hwc(tensor: torch.Tensor) -> np.ndarray:
    assert tensor.dtype == torch.uint8 and tensor.ndim == 3 and tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_decode_jpeg_path_matches_pil_within_decoder_tolerance(tmp_path: Path) -> None:
    path = save(tmp_path / "photo.jpg", Image.fromarray(smooth(48, 64)), quality=90)
    encoded = open_image(path)
    assert encoded.size == (48, 64) and encoded.format == "JPEG"
    fast = encoded._decode_jpeg()
    assert fast is not None, "an RGB JPEG must take the decode_jpeg path"
    assert fast.shape == (3, 48, 64)
    # both are libjpeg builds: they may differ by a level or two in places (IDCT, upsampling)
    assert mean_abs_diff(hwc(read_image(path)), decode_image(path)) < 1.0


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_exif_orientation_gives_the_same_upright_image_on_every_path(
    tmp_path: Path, orientation: int
) -> None:
    stored = smooth(64, 96, seed=orientation)
    stored[:16, :32] = (255, 0, 0)  # a marker in one corner, so every turn and mirror shows
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb = save(tmp_path / "rgb.jpg", Image.fromarray(stored), quality=95, exif=exif)
    cmyk = save(tmp_path / "cmyk.jpg", Image.fromarray(stored).convert("CMYK"), quality=95, exif=exif)
    png = save(tmp_path / "lossless.png", Image.fromarray(stored), exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(png)).convert("RGB"))
    upright = expected.shape[:2]
    assert upright == ((96, 64) if orientation in (6, 8) else (64, 96))

    full = open_image(rgb)
    assert full.size == upright
    decoded = full._decode_jpeg()
    assert decoded is not None  # the decode_jpeg path, not a silent fallback to PIL
    assert mean_abs_diff(hwc(decoded), expected) < 2.0
    assert mean_abs_diff(hwc(full._decode_pil(1)), expected) < 2.0
    assert mean_abs_diff(hwc(read_image(cmyk)), expected) < 3.0
    np.testing.assert_array_equal(hwc(read_image(png)), expected)
    # draft mode decodes the stored orientation at half size: turned the same way afterwards
    half = hwc(read_image(rgb, reduction=2))
    expected_half = np.asarray(Image.fromarray(expected).reduce(2))
    assert half.shape == expected_half.shape and mean_abs_diff(half, expected_half) < 3.0


@pytest.mark.parametrize(
    ("name", "image", "kw", "tolerance"),
    [
        ("grey.jpg", Image.fromarray(smooth(40, 56)[..., 0]), {"quality": 90}, 1.0),
        ("cmyk.jpg", Image.fromarray(smooth(40, 56)).convert("CMYK"), {"quality": 90}, 0.0),
        ("rgb.png", Image.fromarray(smooth(40, 56)), {}, 0.0),
        ("palette.png", Image.fromarray(smooth(40, 56)).convert("P"), {}, 0.0),
        ("rgba.webp", Image.fromarray(smooth(40, 56)).convert("RGBA"), {"lossless": True}, 0.0),
        ("grey.bmp", Image.fromarray(smooth(40, 56)[..., 1]), {}, 0.0),
    ],
)
def test_other_formats_and_modes_decode_to_rgb_like_pil(
    tmp_path: Path, name: str, image: Image.Image, kw: dict, tolerance: float
) -> None:
    path = save(tmp_path / name, image, **kw)
    decoded = read_image(path)
    assert decoded.shape == (3, 40, 56)
    # the PIL fallbacks convert exactly as decode_image does; a grey JPEG goes through decode_jpeg
    assert mean_abs_diff(hwc(decoded), decode_image(path)) <= tolerance


def test_reduced_decoding_rounds_sizes_up_and_is_for_jpegs_only(tmp_path: Path) -> None:
    jpeg = save(tmp_path / "odd.jpg", Image.fromarray(smooth(75, 101)), quality=90)
    png = save(tmp_path / "odd.png", Image.fromarray(smooth(75, 101)))
    assert open_image(jpeg).can_reduce and not open_image(png).can_reduce
    for reduction, shape in ((1, (75, 101)), (2, (38, 51)), (4, (19, 26)), (8, (10, 13))):
        assert read_image(jpeg, reduction).shape == (3, *shape)
        assert read_image(png, reduction).shape == (3, 75, 101)  # a PNG has no cheaper decode
    with pytest.raises(ValueError, match="reduction must be one of"):
        read_image(jpeg, 3)


def test_corrupt_files_raise_corrupt_image_error_naming_them(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(smooth(64, 64)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a JPEG")
    (tmp_path / "header_only.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated on copy")
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    for name in ("empty.jpg", "text.jpg", "header_only.jpg", "missing.jpg"):
        with pytest.raises(CorruptImageError) as info:
            open_image(tmp_path / name)
        assert info.value.path == str(tmp_path / name) and isinstance(info.value, DataError)
        assert "\n" not in str(info.value)
    # the header of a truncated file reads fine: the decode, on every path, finds the damage
    truncated = open_image(tmp_path / "truncated.jpg")
    assert truncated.size == (64, 64)
    for reduction in (1, 2, 8):
        with pytest.raises(CorruptImageError, match=r"cannot read image .*truncated\.jpg: OSError"):
            truncated.decode(reduction)
    with pytest.raises(CorruptImageError, match="empty file"):
        EncodedImage("x.jpg", bytearray())

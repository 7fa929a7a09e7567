"""The DAVIS-2017 reader on its written fixture, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

from densessl.data.base import CorruptImageError, DataError
from densessl.data.davis import DAVIS2017, fixture_clip, write_davis_fixture
from densessl.eval.video import run_davis


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

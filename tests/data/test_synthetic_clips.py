"""Synthetic clips: deterministic, moving, and read back exactly through the DAVIS reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from densessl.data.davis import DAVIS2017
from densessl.data.synthetic_clips import clip_name, render_clip, write_synthetic_davis

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

"""Scene statistics on a hand-made scene: objects, their size in feature cells, crops that cut them,
views whose main objects differ."""

from __future__ import annotations

import numpy as np
import pytest

from densessl.data.synthetic import SyntheticScenes
from densessl.eval.scenes import scene_statistics
from densessl.views.spec import CropSpec


@pytest.fixture
def two_objects(monkeypatch):
    """A 64 px scene: object 1 is the 32x32 top-left quadrant (16 cells of 8x8 px), object 2 an
    8x8 square (1 cell) in the bottom-right one; an ignore band around object 2."""
    instance = np.zeros((64, 64), dtype=np.uint8)
    instance[:32, :32] = 1
    instance[47:57, 47:57] = 255
    instance[48:56, 48:56] = 2
    monkeypatch.setattr(SyntheticScenes, "render", lambda self, i: (None, None, instance))


def test_whole_image_views_cut_nothing_and_agree(two_objects):
    whole = CropSpec(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    stats = scene_statistics("easy", [whole, whole], images=3)
    assert stats["objects_per_image"] == {"mean": 2.0, "min": 2, "max": 2}
    assert stats["cells_per_object"] == {"median": 8.5, "share_at_least_2": 0.5, "share_at_least_4": 0.5}
    assert stats["cut_by_crop"] == 0.0 and stats["different_main_object"] == 0.0


def test_small_crops_cut_objects_and_frame_different_ones(two_objects):
    small = CropSpec(size=16, scale=(0.05, 0.06), ratio=(1.0, 1.0))
    stats = scene_statistics("easy", [small, small], images=200)
    # a 15 px crop can hold object 2 whole but never object 1: most touched objects are cut
    assert 0.5 < stats["cut_by_crop"] < 1.0
    assert 0.0 < stats["different_main_object"] < 1.0

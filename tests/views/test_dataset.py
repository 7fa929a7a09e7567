"""MultiViewDataset under data.corrupt=skip: the skip budget, and substitutes that do not depend
on the worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from densessl.data import DataError
from densessl.data.sources import FolderSource
from densessl.views.dataset import MultiViewDataset, collate_views
from densessl.views.sampler import CropSpec, ViewSampler


def photo_folder(root: Path, broken: int, good_before: int = 100, good_after: int = 100) -> Path:
    """``a/`` and ``z/`` hold readable PNGs (each a different size), ``broken/`` sorts between
    them and holds ``broken`` files that are not images: a run of unreadable files in the middle."""
    rng = np.random.default_rng(0)
    for folder, count in (("a", good_before), ("z", good_after)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            shape = (10 + i % 7, 12 + i % 5, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / folder / f"{i:03d}.png")
    (root / "broken").mkdir()
    for i in range(broken):
        (root / "broken" / f"{i:03d}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated on copy")
    return root


def sampler() -> ViewSampler:
    return ViewSampler([CropSpec(size=8), CropSpec(size=8, reference=0, threshold=0.01)])


def test_a_broken_sub_folder_within_the_default_budget_trains_through(tmp_path):
    source = FolderSource(photo_folder(tmp_path / "photos", broken=20))
    assert len(source) == 220
    dataset = MultiViewDataset(source, sampler(), seed=0)
    items = [dataset[(0, i)] for i in range(len(dataset))]  # the old policy gave up here
    # images 100..119 are the broken ones; each is replaced by the next readable image, z/000
    assert [it["skipped"] for it in items[100:120]] == list(range(20, 0, -1))
    assert items[100]["unreadable"] == [source.path(i) for i in range(100, 120)]
    assert all(it["skipped"] == 0 for it in items[:100] + items[120:])
    substitute = items[120]["image_size"].tolist()
    assert all(it["image_size"].tolist() == substitute for it in items[100:120])


def test_substitutes_do_not_depend_on_the_worker(tmp_path):
    source = FolderSource(photo_folder(tmp_path / "photos", broken=20, good_before=6, good_after=6))
    keys = [(1, i) for i in range(len(source))]
    loader = DataLoader(
        MultiViewDataset(source, sampler(), seed=3, max_skipped_fraction=0.9),
        batch_size=4,
        sampler=list(reversed(keys)),
        num_workers=2,
        collate_fn=collate_views,
    )
    batches = list(loader)
    direct = MultiViewDataset(source, sampler(), seed=3, max_skipped_fraction=0.9)
    expected = collate_views([direct[k] for k in reversed(keys)])
    for v in range(2):
        assert torch.equal(torch.cat([b["crops"][v] for b in batches]), expected["crops"][v])
    assert torch.equal(torch.cat([b["boxes"] for b in batches]), expected["boxes"])
    # every unreadable file is named once over an epoch, so the trainer can count distinct ones
    named = {path for b in batches for path in b["unreadable"]}
    assert named == {source.path(i) for i in range(6, 26)}
    assert sum(b["skipped"] for b in batches) == sum(range(1, 21))


def test_more_unreadable_files_than_the_budget_stop_with_one_line(tmp_path):
    source = FolderSource(photo_folder(tmp_path / "photos", broken=30, good_before=95, good_after=95))
    dataset = MultiViewDataset(source, sampler(), seed=0)
    for i in range(95):
        dataset[(0, i)]
    with pytest.raises(DataError) as info:
        dataset[(0, 95)]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("found 23 unreadable images among 220, more than the skip budget of 22 ")
    assert "data.max_skipped_fraction=0.1" in message and source.path(95 + 22) in message
    # a larger budget lets the same folder through
    lenient = MultiViewDataset(source, sampler(), seed=0, max_skipped_fraction=0.2)
    assert lenient[(0, 95)]["skipped"] == 30


def test_a_folder_of_nothing_but_unreadable_files_is_named():
    class Unreadable:
        def __len__(self) -> int:
            return 3

        def load(self, index: int) -> np.ndarray:
            from densessl.data.base import CorruptImageError

            raise CorruptImageError(f"img{index}.jpg", "not an image")

        def describe(self, index: int) -> str:
            return f"img{index}.jpg"

    dataset = MultiViewDataset(Unreadable(), sampler(), seed=0, max_skipped_fraction=1.0)
    with pytest.raises(DataError, match=r"none of the 3 images is readable; e.g. img1.jpg"):
        dataset[(0, 1)]


def test_check_skip_budget_bounds():
    from densessl.views.dataset import check_skip_budget

    check_skip_budget(22, 220, 0.1)
    with pytest.raises(DataError, match=r"found 23 unreadable images among 220.*budget of 22.*e\.g\. x\.jpg"):
        check_skip_budget(23, 220, 0.1, example="x.jpg")
    check_skip_budget(29, 100, 0.29)  # 0.29 * 100 is 28.999... in floating point
    check_skip_budget(0, 10, 0.0)
    with pytest.raises(DataError):
        check_skip_budget(1, 10, 0.0)

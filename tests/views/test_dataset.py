"""MultiViewDataset and EpochBatchSampler: the skip budget and substitutes that do not depend on the
worker; each process's slice of every global batch; crops that change with the epoch, not the process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from densessl.data import DataError
from densessl.data.sources import FolderSource
from densessl.views.dataset import EpochBatchSampler, MultiViewDataset, collate_views
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


class NoiseImages:
    """``count`` random images of one size, addressed by index like any image source."""

    def __init__(self, count: int, height: int = 40, width: int = 48) -> None:
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        return self.images[index]

    def describe(self, index: int) -> str:
        return f"noise:{index}"


@pytest.mark.parametrize("world", [2, 3])
def test_each_process_takes_its_own_slice_of_every_global_batch(world):
    size, per_process, epochs = 50, 4, 3
    single = list(EpochBatchSampler(size, per_process * world, 1, 0, 7, epochs))
    ranks = [list(EpochBatchSampler(size, per_process, world, r, 7, epochs)) for r in range(world)]
    assert len(single) == epochs * (size // (per_process * world))
    assert all(len(batches) == len(single) for batches in ranks)
    for step, global_batch in enumerate(single):
        slices = [batches[step] for batches in ranks]
        assert all(len(s) == per_process for s in slices)
        # disjoint slices in rank order that together are the one-process batch: the global
        # batch does not depend on how many processes share it
        assert sum(slices, []) == global_batch, step
    per_epoch = len(single) // epochs
    orders = []
    for epoch in range(epochs):
        keys = sum(single[epoch * per_epoch : (epoch + 1) * per_epoch], [])
        assert {e for e, _ in keys} == {epoch}
        indices = [i for _, i in keys]
        assert len(set(indices)) == len(indices), "an image seen twice in one epoch"
        orders.append(indices)
    assert len({tuple(order) for order in orders}) == epochs, "every epoch has its own order"


def test_a_sampler_started_at_a_step_continues_the_same_sequence():
    full = list(EpochBatchSampler(30, 4, 2, 1, seed=3, epochs=3))
    for start in (0, 1, 3, 5, 7, len(full)):
        assert list(EpochBatchSampler(30, 4, 2, 1, seed=3, epochs=3, start_step=start)) == full[start:]


def test_crops_change_with_the_epoch_and_not_with_the_process():
    source = NoiseImages(12)
    dataset = MultiViewDataset(source, sampler(), seed=5)
    # another process (or loader worker) builds its own dataset from the same config
    elsewhere = MultiViewDataset(source, sampler(), seed=5)
    for index in range(len(source)):
        a, again = dataset[(0, index)], elsewhere[(0, index)]
        assert torch.equal(a["boxes"], again["boxes"]) and torch.equal(a["flips"], again["flips"])
        assert all(torch.equal(x, y) for x, y in zip(a["crops"], again["crops"], strict=True))
    boxes = {epoch: [dataset[(epoch, i)]["boxes"] for i in range(len(source))] for epoch in (0, 1)}
    changed = sum(not torch.equal(b0, b1) for b0, b1 in zip(boxes[0], boxes[1], strict=True))
    assert changed >= len(source) - 1, f"only {changed} of {len(source)} images got new crops"
    # images of the same size get their own crops within an epoch too
    assert len({tuple(b.flatten().tolist()) for b in boxes[0]}) >= len(source) - 1


def test_the_processes_batches_put_together_are_the_one_process_batch():
    source = NoiseImages(24)
    dataset = MultiViewDataset(source, sampler(), seed=1)

    def batches(world: int, rank: int) -> list[dict]:
        keys = EpochBatchSampler(len(source), 8 // world, world, rank, seed=1, epochs=2)
        return list(DataLoader(dataset, batch_sampler=keys, collate_fn=collate_views))

    single, first, second = batches(1, 0), batches(2, 0), batches(2, 1)
    assert len(single) == len(first) == len(second) == 6
    for whole, a, b in zip(single, first, second, strict=True):
        assert not torch.equal(a["boxes"], b["boxes"]), "two processes were given the same crops"
        assert torch.equal(torch.cat([a["boxes"], b["boxes"]]), whole["boxes"])
        for view in range(2):
            assert torch.equal(torch.cat([a["crops"][view], b["crops"][view]]), whole["crops"][view])


def test_jpeg_views_keep_boxes_in_original_upright_pixels_whatever_the_decode(tmp_path):
    from tests.data.test_decode import mean_abs_diff, smooth

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 768x512 (w x h), shown turned a quarter: 512 wide, 768 high
    Image.fromarray(smooth(512, 768, cell=64)).save(tmp_path / "a.jpg", quality=95, exif=exif)
    Image.fromarray(smooth(480, 640, seed=1, cell=64)).save(tmp_path / "b.jpg", quality=95)
    Image.fromarray(smooth(480, 640, seed=2, cell=64)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    source = FolderSource(tmp_path)
    views = ViewSampler([CropSpec(size=32, scale=(0.3, 1.0)), CropSpec(size=32, reference=0, threshold=0.01)])
    full = MultiViewDataset(source, views, seed=0, max_reduction=1)
    reduced = MultiViewDataset(source, views, seed=0)
    for index, size in enumerate(([768, 512], [480, 640], [480, 640])):
        a, b = full[(0, index)], reduced[(0, index)]
        assert a["image_size"].tolist() == b["image_size"].tolist() == size
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["flips"], b["flips"])
        assert int((a["boxes"][:, 0] + a["boxes"][:, 2]).max()) <= size[1]
        assert int((a["boxes"][:, 1] + a["boxes"][:, 3]).max()) <= size[0]
        for x, y in zip(a["crops"], b["crops"], strict=True):
            assert mean_abs_diff(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy()) < 5.0


def test_a_jpeg_truncated_after_its_header_is_skipped_or_named(tmp_path):
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 90, dtype=np.uint8)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])  # the header parses, the pixels do not
    Image.fromarray(np.full((30, 50, 3), 200, dtype=np.uint8)).save(tmp_path / "c.png")
    source = FolderSource(tmp_path)
    item = MultiViewDataset(source, sampler(), seed=0, max_skipped_fraction=0.5)[(0, 1)]
    assert item["skipped"] == 1 and item["unreadable"] == [source.path(1)]
    assert item["image_size"].tolist() == [30, 50]
    with pytest.raises(DataError, match=r"^cannot read image .*b\.jpg: .*\(set data\.corrupt=skip"):
        MultiViewDataset(source, sampler(), seed=0, corrupt="error")[(0, 1)]


def box_areas(records, image_size) -> dict[str, torch.Tensor]:
    """Per-sample targets: each view's box area and the source size."""
    return {"areas": torch.tensor([r.box.area for r in records]), "size": torch.tensor(image_size)}


def test_the_collated_batch_keeps_every_samples_own_record_fields_and_targets():
    # a constraint that two tries often miss, so that accepted varies over the batch like flips
    specs = [
        CropSpec(size=8, scale=(0.2, 0.5)),
        CropSpec(size=8, scale=(0.05, 0.1), reference=0, rule="iou", threshold=0.15, tries=2),
    ]
    dataset = MultiViewDataset(NoiseImages(16), ViewSampler(specs), seed=2, targets=box_areas)
    samples = [dataset[(0, i)] for i in range(16)]
    batch = collate_views(samples)
    for key in ("boxes", "flips", "accepted"):
        assert torch.equal(batch[key], torch.stack([s[key] for s in samples])), key
    assert torch.equal(batch["image_sizes"], torch.stack([s["image_size"] for s in samples]))
    assert batch["references"] == (None, 0)
    assert set(batch["targets"]) == {"areas", "size"}
    assert torch.equal(batch["targets"]["areas"], batch["boxes"][..., 2] * batch["boxes"][..., 3])
    assert torch.equal(batch["targets"]["size"], batch["image_sizes"])
    for view in range(2):
        assert torch.equal(batch["crops"][view], torch.stack([s["crops"][view] for s in samples]))
    accepted, flips = batch["accepted"][:, 1], batch["flips"][:, 1]
    assert 0 < int(accepted.sum()) < len(samples), "the constraint should be met by some draws only"
    assert not torch.equal(accepted, flips)

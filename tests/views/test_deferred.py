"""Device decoding (``data.decode: gpu``), run here on the CPU: the same boxes and crops as
decoding in the worker, EXIF orientation turned on the device as PIL turns it, the formats that
stay in the worker, and unreadable files under both corrupt policies."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from densessl.config import load_config
from densessl.data.decode import decode_jpegs, open_image, orient
from densessl.data.sources import FolderSource
from densessl.errors import DataError
from densessl.training.trainer import Trainer
from densessl.views.dataset import MultiViewDataset, collate_views
from densessl.views.deferred import DeferredImage, complete_views
from densessl.views.sampler import CropSpec, ViewSampler
from tests.helpers import QUICK, TINY

EXIF_ORIENTATION = 0x0112


def smooth(height: int, width: int, seed: int, cell: int = 8) -> np.ndarray:
    rows, cols = height // cell + 2, width // cell + 2
    coarse = np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def jpeg(path: Path, array: np.ndarray, orientation: int = 1, mode: str = "RGB") -> Path:
    image = Image.fromarray(array).convert(mode)
    exif = Image.Exif()
    if orientation != 1:
        exif[EXIF_ORIENTATION] = orientation
    image.save(path, "JPEG", quality=92, exif=exif.tobytes())
    return path


def header_only_jpeg(path: Path) -> Path:
    """A JPEG whose header parses and whose data ends with the end-of-image marker, but which holds
    no scan: it passes the worker's checks and no decoder can read it."""
    buffer = io.BytesIO()
    Image.fromarray(smooth(40, 48, 0)).save(buffer, "JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: data.find(b"\xff\xda")] + b"\xff\xd9")
    return path


def photos(root: Path) -> Path:
    """JPEGs of several sizes and orientations, a grey one, a CMYK one, a PNG, a truncated JPEG."""
    root.mkdir(parents=True)
    for i, (h, w, o) in enumerate(
        [(60, 80, 1), (72, 50, 6), (64, 64, 8), (50, 90, 3), (80, 60, 5), (66, 70, 7)]
    ):
        jpeg(root / f"{i:02d}.jpg", smooth(h, w, i), orientation=o)
    jpeg(root / "10_grey.jpg", smooth(56, 64, 10), mode="L")
    jpeg(root / "11_cmyk.jpg", smooth(56, 64, 11), mode="CMYK")
    Image.fromarray(smooth(48, 52, 12)).save(root / "12.png")
    whole = (root / "00.jpg").read_bytes()
    (root / "13_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return root


def views() -> ViewSampler:
    return ViewSampler([CropSpec(size=16), CropSpec(size=12, reference=0, interpolation="bicubic")])


def batch_of(dataset: MultiViewDataset, epoch: int = 0) -> dict:
    return collate_views([dataset[(epoch, i)] for i in range(len(dataset))])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_images_upright_as_pil_does(orientation):
    stored = Image.fromarray(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))
    exif = stored.getexif()
    exif[EXIF_ORIENTATION] = orientation
    stored.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(stored))
    turned = orient(torch.from_numpy(np.array(stored)).permute(2, 0, 1), orientation)
    assert np.array_equal(turned.permute(1, 2, 0).numpy(), expected)


def test_which_files_leave_the_worker_undecoded(tmp_path):
    folder = photos(tmp_path / "photos")
    deferrable = {p.name: open_image(p).deferrable for p in sorted(folder.iterdir())}
    assert deferrable == {
        **{f"{i:02d}.jpg": True for i in range(6)},
        "10_grey.jpg": True,
        # PIL's CMYK conversion is what the CPU path gives: nvjpeg's would differ
        "11_cmyk.jpg": False,
        "12.png": False,
        # no end-of-image marker: decoded (and judged) in the worker
        "13_truncated.jpg": False,
    }


def test_device_decoding_gives_the_workers_boxes_and_crops(tmp_path):
    source = FolderSource(photos(tmp_path / "photos"))
    # full-size decoding in the worker: the two paths run the same decoder and the same crop
    on_worker = MultiViewDataset(source, views(), seed=5, max_reduction=1)
    on_device = MultiViewDataset(source, views(), seed=5, max_reduction=1, defer_jpeg=True)
    expected, batch = batch_of(on_worker, epoch=2), batch_of(on_device, epoch=2)
    rows = [row for row, _ in batch["deferred"]]
    # 00-05.jpg and the grey JPEG; the truncated JPEG (row 9) is replaced by the next readable
    # image, 00.jpg, which is deferred too; CMYK (7) and PNG (8) are decoded in the worker
    assert [Path(source.path(i)).name for i in (6, 7, 8, 9)] == [
        "10_grey.jpg",
        "11_cmyk.jpg",
        "12.png",
        "13_truncated.jpg",
    ]
    assert rows == [0, 1, 2, 3, 4, 5, 6, 9]
    assert all(isinstance(item, DeferredImage) for _, item in batch["deferred"])
    for key in ("boxes", "flips", "accepted", "image_sizes"):
        assert torch.equal(batch[key], expected[key]), key
    assert all(not c[rows].any() for c in batch["crops"]), "deferred rows wait as zeros"
    crops = complete_views(batch, on_device.sampler, torch.device("cpu"))
    assert batch["deferred"] == [] and batch["crops"] is crops
    for view, (got, want) in enumerate(zip(crops, expected["crops"], strict=True)):
        assert torch.equal(got, want), view
    assert batch["skipped"] == expected["skipped"] == 1  # the truncated JPEG, in the worker


def test_device_decoding_differs_from_reduced_worker_decoding_by_interpolation_only(tmp_path):
    root = tmp_path / "large"
    root.mkdir()
    for i in range(4):
        # content varying over ~64 source pixels, a few output pixels after the crops' 10-20x
        # shrink: interpolation differences stay small, a misplaced or misturned crop does not
        jpeg(root / f"{i}.jpg", smooth(480, 640, i, cell=64), orientation=(1, 6, 3, 8)[i])
    sampler = ViewSampler([CropSpec(size=32, scale=(0.5, 1.0)), CropSpec(size=32, scale=(0.5, 1.0))])
    reduced = MultiViewDataset(FolderSource(root), sampler, seed=0)
    assert all(
        reduced.sampler.reduction(reduced.sampler.sample_records(480, 640, torch.Generator().manual_seed(s)))
        > 1
        for s in range(3)
    )
    expected = batch_of(reduced)
    batch = batch_of(MultiViewDataset(FolderSource(root), sampler, seed=0, defer_jpeg=True))
    assert len(batch["deferred"]) == 4 and torch.equal(batch["boxes"], expected["boxes"])
    for got, want in zip(complete_views(batch, sampler, torch.device("cpu")), expected["crops"], strict=True):
        difference = (got.float() - want.float()).abs()
        # against the same crop mirrored: what a flip or box mistake would cost
        mistaken = (got.flip(-1).float() - want.float()).abs()
        assert difference.mean() < 4.0 and difference.mean() < mistaken.mean() / 4, (difference, mistaken)


def test_a_file_no_decoder_reads_is_replaced_under_skip_and_named_under_error(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        jpeg(root / f"{i}.jpg", smooth(40, 48, i))
    header_only_jpeg(root / "1_broken.jpg")
    source = FolderSource(root)
    broken = [source.path(i) for i in range(len(source))].index(str(root / "1_broken.jpg"))
    assert open_image(root / "1_broken.jpg").deferrable
    dataset = MultiViewDataset(source, views(), seed=0, defer_jpeg=True)
    batch = batch_of(dataset)
    assert decode_jpegs([batch["deferred"][broken][1].data], [1], torch.device("cpu")) == [None]
    crops = complete_views(batch, dataset.sampler, torch.device("cpu"))
    donor = broken + 1
    assert batch["skipped"] == 1 and batch["unreadable"] == [str(root / "1_broken.jpg")]
    for key in ("boxes", "flips", "image_sizes"):
        assert torch.equal(batch[key][broken], batch[key][donor]), key
    assert all(torch.equal(c[broken], c[donor]) and c[broken].any() for c in crops)
    with pytest.raises(DataError, match="1_broken.jpg.*data.corrupt=skip"):
        complete_views(batch_of(dataset), dataset.sampler, torch.device("cpu"), corrupt="error")


def test_training_with_device_decoding_equals_decoding_in_the_workers(tmp_path, caplog):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(16):
        # 40x44 px: no crop of 32 px can be decoded at half size, so both paths decode in full
        jpeg(root / f"{i:02d}.jpg", smooth(40, 44, i), orientation=(1, 6)[i % 2])
    overrides = [
        *TINY,
        f"data.source=folder:{root}",
        "train.batch_size=8",
        "train.epochs=2",
        "method.queue_size=16",
    ]
    Trainer(load_config(QUICK, [*overrides, "data.decode=cpu"]), tmp_path / "cpu").fit()
    with caplog.at_level(logging.WARNING):
        Trainer(load_config(QUICK, [*overrides, "data.decode=gpu"]), tmp_path / "device").fit()
    assert any("data.decode=gpu on a cpu run" in r.getMessage() for r in caplog.records)

    def losses(run: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert losses(tmp_path / "device") == losses(tmp_path / "cpu")
    assert len(losses(tmp_path / "cpu")) == 4


def test_auto_decodes_on_the_device_only_when_training_on_cuda():
    from densessl.training.trainer import decodes_on_device

    assert decodes_on_device("auto", torch.device("cuda", 0))
    assert not decodes_on_device("auto", torch.device("cpu"))
    assert decodes_on_device("gpu", torch.device("cpu")) and decodes_on_device("gpu", torch.device("cuda"))
    assert not decodes_on_device("cpu", torch.device("cuda"))

"""Decoding cost per image: PIL plus numpy copies (the old path) vs ``decode_jpeg`` vs reduced size.

Writes ``--count`` smooth ``--width x --height`` JPEGs (quality 90) to ``--dir`` (a temporary
folder by default) and times, in one thread, the median over ``--repeats`` passes of:

- ``pil``: ``decode_image`` (PIL, RGB array) and the ``(3, H, W)`` contiguous tensor made from it;
- ``decode_jpeg``: :func:`densessl.data.decode.read_image`, the pre-training path at full size;
- ``reduced/2``, ``/4``, ``/8``: the same file decoded in PIL's draft mode;
- ``crop``: the full-size path plus two 224 px crops from boxes half the image's side, against
  ``crop reduced/2``: the same boxes cropped from the image decoded at half size.

It also reports, for a recipe (``--recipe``), how often its views allow each reduction on images
of that size, which is what decides whether reduced decoding pays off on such a dataset.

Usage::

    python benchmarks/decode.py                       # 50 images of 640x480
    python benchmarks/decode.py --width 1280 --height 960 --recipe slotcon/coco_r50_800ep
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from densessl.config import load_config
from densessl.data.decode import open_image, read_image
from densessl.data.sources import decode_image
from densessl.views.geometry import Box, ViewRecord
from densessl.views.sampler import ViewSampler


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """Low-frequency colour fields: JPEG-friendly like photographs, unlike noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    return np.asarray(image)


def write_jpegs(folder: Path, count: int, height: int, width: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            Image.fromarray(smooth_image(height, width, i)).save(path, quality=90)
        paths.append(path)
    return paths


def per_image_ms(paths: list[Path], fn: Callable[[Path], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            fn(path)
        times.append((time.perf_counter() - start) / len(paths) * 1e3)
    return statistics.median(times)


def reduction_shares(recipe: str, height: int, width: int, draws: int = 2000) -> dict[int, float]:
    config = load_config(recipe)
    sampler = ViewSampler([v.crop for v in config.views])
    generator = torch.Generator().manual_seed(0)
    counts = Counter(
        sampler.reduction(sampler.sample_records(height, width, generator)) for _ in range(draws)
    )
    return {factor: counts[factor] / draws for factor in (1, 2, 4, 8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="folder for the JPEGs (default: temporary)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--recipe", default="mocov2/coco_r50_800ep")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(args.dir or Path(tmp), args.count, args.height, args.width)
        sampler = ViewSampler([load_config(args.recipe).views[0].crop] * 2)
        side = min(args.height, args.width) // 2 * 2
        box = Box((args.width - side) // 2, (args.height - side) // 2, side, side)
        records = [ViewRecord(box=box, flipped=False, size=(224, 224))] * 2

        def crop(path: Path, reduction: int) -> None:
            file = open_image(path)
            sampler.crop(file.decode(reduction), records, file.size)

        rows = {
            "pil": per_image_ms(
                paths, lambda p: torch.from_numpy(decode_image(p)).permute(2, 0, 1).contiguous(), args.repeats
            ),
            "decode_jpeg": per_image_ms(paths, read_image, args.repeats),
            **{
                f"reduced/{r}": per_image_ms(paths, lambda p, r=r: read_image(p, r), args.repeats)
                for r in (2, 4, 8)
            },
            f"crop 2x{side}px->224 full": per_image_ms(paths, lambda p: crop(p, 1), args.repeats),
            f"crop 2x{side}px->224 reduced/2": per_image_ms(paths, lambda p: crop(p, 2), args.repeats),
        }
    for name, ms in rows.items():
        print(f"{name:32s} {ms:6.3f} ms/image")
    shares = reduction_shares(args.recipe, args.height, args.width)
    print(f"{args.recipe}: share of samples decodable at 1/r on {args.width}x{args.height}: {shares}")
    print(json.dumps({"size": [args.height, args.width], "ms_per_image": rows, "reduction_shares": shares}))


if __name__ == "__main__":
    main()

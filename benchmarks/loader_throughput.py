"""Input-pipeline throughput of recipes: decoding, crops and view targets in the loader, then the
batched photometric augmentation on the training device.

For each recipe it builds the dataset exactly as the trainer does (source, view sampler, the
method's per-sample view targets) and measures, in one process with the loader's work done
in-line (``--workers 0``, the default: one core's worth, comparable between recipes):

- ``loader``: images per second through sampling, cropping, targets and collation;
- ``augment``: images per second through the photometric pipelines of every view;
- ``total``: both in sequence.

With ``--decode gpu`` the workers only read each JPEG's bytes and draw its boxes, and the decoding
and cropping on the device (``--device``; the CPU when it is not given) are timed apart as
``device_decode``, inside ``total``.

Usage::

    python benchmarks/loader_throughput.py                          # quick MoCo-v2 vs revisited MoCo
    python benchmarks/loader_throughput.py --recipes mocov2/coco_r50_800ep revisited_moco/coco_r50_200ep \\
        --source folder:/data/coco/train2017
    python benchmarks/loader_throughput.py --recipes mocov2/coco_r50_800ep --source folder:/data/jpegs \\
        --decode cpu gpu                                             # where JPEGs are decoded
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from densessl.bench import build_dataset, make_loader, synchronize, timed_batches
from densessl.config import load_config
from densessl.training.trainer import prepare_views
from densessl.views.deferred import complete_views


def measure(
    recipe: str, source: str | None, batch: int, batches: int, workers: int, decode: str, device: torch.device
) -> dict:
    overrides = [f"data.source={source}"] if source else []
    config = load_config(recipe, [*overrides, f"data.decode={decode}"])
    dataset = build_dataset(config, min_length=batch * batches, device=device)
    loader_s = decode_s = augment_s = 0.0
    images = 0
    generator = torch.Generator().manual_seed(0)
    for collated, waited in timed_batches(make_loader(dataset, batch, workers), batches, warmup=0):
        loader_s += waited
        start = time.perf_counter()
        complete_views(collated, dataset.sampler, device)
        synchronize(device)
        decode_s += time.perf_counter() - start
        start = time.perf_counter()
        prepare_views(collated, config.views, generator, device, False)
        synchronize(device)
        augment_s += time.perf_counter() - start
        images += collated["crops"][0].shape[0]
    return {
        "recipe": recipe,
        "decode": decode,
        "views": len(config.views),
        "loader_images_per_s": images / loader_s,
        "device_decode_images_per_s": images / max(decode_s, 1e-9),
        "augment_images_per_s": images / augment_s,
        "total_images_per_s": images / (loader_s + decode_s + augment_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes", nargs="+", default=["quick/mocov2_synthetic", "quick/revisited_moco_synthetic"]
    )
    parser.add_argument("--source", default=None, help="data.source for every recipe (default: the recipe's)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--decode", nargs="+", default=["cpu"], choices=["cpu", "gpu"])
    parser.add_argument("--device", default="cpu", help="the training device (cpu, cuda)")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [
        measure(r, args.source, args.batch, args.batches, args.workers, d, device)
        for r in args.recipes
        for d in args.decode
    ]
    for row in rows:
        device_decode = row["device_decode_images_per_s"] if row["decode"] == "gpu" else float("nan")
        print(
            f"{row['recipe']:36s} {row['decode']} {row['views']} views"
            f"  loader {row['loader_images_per_s']:8.1f}"
            f"  device decode {device_decode:8.1f}  augment {row['augment_images_per_s']:8.1f}"
            f"  total {row['total_images_per_s']:8.1f} img/s"
        )
    print(json.dumps({"threads": torch.get_num_threads(), "workers": args.workers, "runs": rows}))


if __name__ == "__main__":
    main()

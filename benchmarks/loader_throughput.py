"""Input-pipeline throughput of recipes: decoding, crops and view targets in the loader, then the
batched photometric augmentation on the training device.

For each recipe it builds the dataset exactly as the trainer does (source, view sampler, the
method's per-sample view targets) and measures, in one process with the loader's work done
in-line (``--workers 0``, the default: one core's worth, comparable between recipes):

- ``loader``: images per second through sampling, cropping, targets and collation;
- ``augment``: images per second through the photometric pipelines of every view;
- ``total``: both in sequence.

Usage::

    python benchmarks/loader_throughput.py                          # quick MoCo-v2 vs revisited MoCo
    python benchmarks/loader_throughput.py --recipes mocov2/coco_r50_800ep revisited_moco/coco_r50_200ep \\
        --source folder:/data/coco/train2017
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from densessl.bench import build_dataset, make_loader, timed_batches
from densessl.config import load_config
from densessl.training.trainer import prepare_views


def measure(recipe: str, source: str | None, batch: int, batches: int, workers: int) -> dict:
    overrides = [f"data.source={source}"] if source else []
    config = load_config(recipe, overrides)
    dataset = build_dataset(config, min_length=batch * batches)
    loader_s = augment_s = 0.0
    images = 0
    generator = torch.Generator().manual_seed(0)
    for collated, waited in timed_batches(make_loader(dataset, batch, workers), batches, warmup=0):
        loader_s += waited
        start = time.perf_counter()
        prepare_views(collated, config.views, generator, torch.device("cpu"), False)
        augment_s += time.perf_counter() - start
        images += collated["crops"][0].shape[0]
    return {
        "recipe": recipe,
        "views": len(config.views),
        "loader_images_per_s": images / loader_s,
        "augment_images_per_s": images / augment_s,
        "total_images_per_s": images / (loader_s + augment_s),
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
    args = parser.parse_args()
    rows = [measure(r, args.source, args.batch, args.batches, args.workers) for r in args.recipes]
    for row in rows:
        print(
            f"{row['recipe']:40s} {row['views']} views  loader {row['loader_images_per_s']:8.1f} img/s  "
            f"augment {row['augment_images_per_s']:8.1f} img/s  total {row['total_images_per_s']:8.1f} img/s"
        )
    print(json.dumps({"threads": torch.get_num_threads(), "workers": args.workers, "runs": rows}))


if __name__ == "__main__":
    main()

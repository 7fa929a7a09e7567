"""Training-step time of every method on one batch, and the framework's overhead.

For each setting it times, on the same batch of views:
- one full training step per method (photometric augmentation of both views on the device,
  forward, loss, backward, optimiser step, queue update, EMA);
- the bare backbone work those steps cannot avoid: forward + backward of the backbone on the
  query view, forward of the backbone on the key view (no heads, no loss, no optimiser).

The methods of a setting are timed in alternation (one step of each, in turn, ``--iters`` times),
so their ratios hold on a shared machine. It prints milliseconds per step, each method's ratio to
MoCo-v2 and step / bare-backbone ratios (bare = one query forward and backward and one key
forward; a symmetric method such as MGC does both twice),
and the same figures as one JSON line. For a method with per-sample view targets (MGC's
correspondences) it also times their computation, which runs in the loader workers, per image.
The ``vits16-224`` setting compares MGC with MoCo-v2 on the same ViT-S/16 (8 heads) and with
MoCo-v2 on a ResNet-50, the unit of the methods spec's cost estimates (spec 6.1). Usage::

    python benchmarks/step_time.py                      # every setting
    python benchmarks/step_time.py --setting quick --iters 20
    python benchmarks/step_time.py --setting vits16-224 --batch-224 8
    python benchmarks/step_time.py --setting quick --methods densecl --flops  # and FLOPs per step
    python benchmarks/step_time.py --device cuda --precision bf16 --batch-r50 64   # on a GPU
    DENSESSL_PLAIN_INFONCE=1 python benchmarks/step_time.py --setting quick   # the loss before fusion

``DENSESSL_PLAIN_INFONCE=1`` puts the plain InfoNCE formulas (benchmarks/infonce.py) back into the
methods, the "before" of a comparison with the fused loss; ``DENSESSL_FLOAT32_PRODUCTS=1`` keeps
the fused loss's matrix products in float32 under autocast (the fused loss before it followed
autocast). The library itself has neither switch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from densessl.bench import add_view_targets, build_train_step, count_flops, fixed_batch, timed
from densessl.config import load_config
from densessl.methods import METHODS
from densessl.training.trainer import build_model, resolve_precision
from densessl.views.sampler import ViewSampler

#: ``--flops``: also count each step's floating-point operations (torch.utils.flop_counter)
COUNT_FLOPS = False

#: MoCo-v2's recipe on MGC's backbone, so that the two differ in the method only
VITS16 = ["model.arch=vit_small", "model.patch_size=16", "model.num_heads=8", "model.img_size=224"]

#: setting -> name -> recipe, or (recipe, overrides); MoCo-v2 is the reference of each setting
SETTINGS: dict[str, dict[str, str | tuple[str, list[str]]]] = {
    "r50-224": {
        "densecl": "densecl/coco_r50_800ep",
        "mocov2": "mocov2/coco_r50_800ep",
        "revisited_moco": "revisited_moco/coco_r50_200ep",
        "slotcon": "slotcon/coco_r50_800ep",
    },
    "vits16-224": {
        "mgc": "mgc/coco_vits16_800ep",
        "mocov2": ("mocov2/coco_r50_800ep", VITS16),
        "mocov2_r50": "mocov2/coco_r50_800ep",
    },
    "quick": {
        "densecl": "quick/densecl_synthetic",
        "mgc": "quick/mgc_synthetic",
        "mocov2": "quick/mocov2_synthetic",
        "revisited_moco": "quick/revisited_moco_synthetic",
        "slotcon": "quick/slotcon_synthetic",
    },
}


def view_targets_ms(config, method_class, draws: int = 200) -> float | None:
    """Milliseconds of CPU per image for the method's per-sample view targets, on the view records
    the recipe's sampler draws from 480 x 640 images (a COCO-like size); None without targets."""
    targets = method_class.view_targets(config)
    if targets is None:
        return None
    sampler = ViewSampler([v.crop for v in config.views])
    g = torch.Generator().manual_seed(0)
    records = [sampler.sample_records(480, 640, g) for _ in range(draws)]
    start = time.process_time()
    for sample in records:
        targets(sample, (480, 640))
    return (time.process_time() - start) * 1000 / draws


def build_steps(
    recipe: str | tuple[str, list[str]],
    batch: int,
    device: torch.device,
    precision: str,
    channels_last: bool,
) -> dict:
    """A method's full training step and its bare backbone passes as two callables, on one fixed
    batch, and the per-image cost of its view targets (None without)."""
    recipe, extra = (recipe, []) if isinstance(recipe, str) else recipe
    overrides = [
        *extra,
        f"train.batch_size={batch}",
        f"train.precision={precision}",
        f"train.channels_last={str(channels_last).lower()}",
    ]
    config = load_config(recipe, overrides)  # a shipped recipe's name
    batch_data = fixed_batch(config, batch)
    add_view_targets(batch_data, config)
    train_step = build_train_step(config, device, batch_data)
    method_class = METHODS[config.method.name]
    teacher = build_model(config).export_encoder().to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    dtype = resolve_precision(precision, device)
    sizes = [v.crop.size for v in config.views]

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    # a trainable copy: the exported encoder is the frozen teacher for some methods
    backbone = build_model(config).export_encoder().to(device).requires_grad_(True)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xq = torch.randn(batch, 3, sizes[0], sizes[0], device=device).contiguous(memory_format=fmt)
    xk = torch.randn(batch, 3, sizes[1], sizes[1], device=device).contiguous(memory_format=fmt)

    def bare_step():
        with autocast():
            out = backbone(xq)
        out.float().mean().backward()
        with torch.no_grad(), autocast():
            teacher(xk)

    return {
        "step": train_step,
        "bare": bare_step,
        "targets_ms": view_targets_ms(config, method_class),
        "flops": count_flops(train_step) if COUNT_FLOPS else None,
    }


def float32_products(step):
    """``step`` run with the fused InfoNCE's matrix products in float32 under autocast."""
    from densessl.models import infonce

    def run() -> None:
        original = infonce._product_dtype
        infonce._product_dtype = lambda device_type: None
        try:
            step()
        finally:
            infonce._product_dtype = original

    return run


def measure(
    setting: str,
    batch: int,
    iters: int,
    warmup: int,
    device: torch.device,
    precision: str,
    channels_last: bool,
    methods: list[str] | None = None,
    product_variants: bool = False,
) -> dict:
    """Medians over ``iters`` rounds; each round times every method's step and bare passes in
    turn, so that a load that comes and goes on a shared machine weighs on all of them alike.
    ``methods``: a subset of the setting's (MoCo-v2, the reference, is always timed).
    ``product_variants``: each round also times every step with the fused loss's products kept in
    float32 under autocast (``step_ms_float32_products``), the loss before it followed autocast."""
    chosen = {*methods, "mocov2"} if methods else set(SETTINGS[setting])
    steps = {
        name: build_steps(recipe, batch, device, precision, channels_last)
        for name, recipe in SETTINGS[setting].items()
        if name in chosen
    }
    for fns in steps.values():
        for _ in range(warmup):
            fns["step"]()
            fns["bare"]()
    kinds = ("step", "bare", "step_f32") if product_variants else ("step", "bare")
    for fns in steps.values():
        fns["step_f32"] = float32_products(fns["step"])
    times: dict[str, dict[str, list[float]]] = {name: {k: [] for k in kinds} for name in steps}
    for _ in range(iters):
        for name, fns in steps.items():
            for kind in kinds:
                times[name][kind].append(timed(fns[kind], 1, 0, device))
    results: dict = {"setting": setting, "batch": batch}
    for name, fns in steps.items():
        step_ms, bare_ms = statistics.median(times[name]["step"]), statistics.median(times[name]["bare"])
        results[name] = {
            "step_ms": step_ms,
            "bare_backbone_ms": bare_ms,
            "overhead": step_ms / bare_ms,
            "images_per_s": batch / step_ms * 1000,
        }
        if product_variants:
            results[name]["step_ms_float32_products"] = statistics.median(times[name]["step_f32"])
        if fns["flops"] is not None:
            results[name]["gflop_per_step"] = fns["flops"] / 1e9
        if fns["targets_ms"] is not None:
            results[name]["view_targets_ms_per_image"] = fns["targets_ms"]
            # loader-worker CPU for the targets, as a share of the step's time per image
            results[name]["view_targets_share"] = fns["targets_ms"] / (step_ms / batch)
    for name in steps:
        if name != "mocov2":
            results[f"{name}_over_mocov2"] = results[name]["step_ms"] / results["mocov2"]["step_ms"]
            if product_variants:
                results[f"{name}_over_mocov2_float32_products"] = (
                    results[name]["step_ms_float32_products"] / results["mocov2"]["step_ms_float32_products"]
                )
            if "gflop_per_step" in results[name]:
                flops = results[name]["gflop_per_step"] / results["mocov2"]["gflop_per_step"]
                results[f"{name}_over_mocov2_flops"] = flops
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--batch-r50", "--batch-224", type=int, default=16, dest="batch_224")
    parser.add_argument("--batch-quick", type=int, default=128)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of each setting's methods")
    parser.add_argument("--flops", action="store_true", help="also count each step's FLOPs and their ratio")
    parser.add_argument(
        "--product-variants",
        action="store_true",
        help="also time each step with the fused loss's products in float32 under autocast",
    )
    args = parser.parse_args()
    if os.environ.get("DENSESSL_PLAIN_INFONCE") == "1":
        from infonce import install_plain  # benchmarks/infonce.py, beside this script

        install_plain()
    global COUNT_FLOPS
    COUNT_FLOPS = args.flops
    if os.environ.get("DENSESSL_FLOAT32_PRODUCTS") == "1":
        from densessl.models import infonce

        infonce._product_dtype = lambda device_type: None
    device = torch.device(args.device)
    settings = list(SETTINGS) if args.setting == "all" else [args.setting]
    report = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "plain_infonce": os.environ.get("DENSESSL_PLAIN_INFONCE") == "1",
        "float32_products": os.environ.get("DENSESSL_FLOAT32_PRODUCTS") == "1",
        "runs": [],
    }
    for setting in settings:
        batch = args.batch_quick if setting == "quick" else args.batch_224
        r = measure(
            setting,
            batch,
            args.iters,
            args.warmup,
            device,
            args.precision,
            args.channels_last,
            args.methods,
            args.product_variants,
        )
        report["runs"].append(r)
        print(f"[{setting}, batch {batch}, {device}]")
        for name in (n for n in SETTINGS[setting] if n in r):
            m = r[name]
            print(
                f"  {name:8s} step {m['step_ms']:9.1f} ms  bare backbone {m['bare_backbone_ms']:9.1f} ms  "
                f"overhead x{m['overhead']:.2f}  {m['images_per_s']:.1f} img/s"
            )
            if "view_targets_ms_per_image" in m:
                print(
                    f"  {name:8s} view targets {m['view_targets_ms_per_image']:.3f} ms/image in the loader "
                    f"workers ({100 * m['view_targets_share']:.1f}% of the step time per image)"
                )
        for name in (n for n in SETTINGS[setting] if n in r):
            if name != "mocov2":
                line = f"  {name} / mocov2 step time: {r[f'{name}_over_mocov2']:.3f}"
                if f"{name}_over_mocov2_float32_products" in r:
                    line += f" ({r[f'{name}_over_mocov2_float32_products']:.3f} with float32 products)"
                if f"{name}_over_mocov2_flops" in r:
                    line += f", FLOPs: {r[f'{name}_over_mocov2_flops']:.3f} (the arithmetic's floor)"
                print(line)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""Size-aware defaults: a recipe chosen from the dataset size and the machine.

``densessl pretrain --method densecl --data folder:DIR`` (no recipe) counts the images and asks
:func:`choose_recipe` for a recipe; the choice is a pure function of (method, number of images,
device kind, device memory, cores), so it is tested without data or hardware. The rules:

- **starting recipe and backbone**: with a GPU of at least 8 GiB and at least 5000 images, the
  method's published COCO recipe (ResNet-50, 224 px views); otherwise (a CPU, a small GPU, or
  a small dataset a ResNet-50 would only memorise) the method's quick recipe: a small-input
  ResNet-18 (output stride 8) at 64 px on a CPU with width 0.25, or at 96 px with full width on
  a GPU; the blur is scaled to the crop as the quick recipes do;
- **batch**: the largest power of two that fits 80% of the device memory (a per-image estimate
  that scales with crop area, width and depth, halved on a GPU for bf16) and leaves at least 8
  steps per epoch, at most the starting recipe's batch and at least 8; the lr is scaled linearly
  with the batch, as the references do;
- **queue** (MoCo-v2, DenseCL): at most a quarter of the images (spec C4: a queue longer than
  the data holds stale copies of the same images), a power of two, at most the recipe's;
  **prototypes** (SlotCon): at most one per 4 images;
- **epochs**: enough for a target number of steps (2000 on a CPU, 20000 on a GPU), between 1
  and 800; warm-up at most 5% of them, about ten checkpoints over the run;
- **workers**: on a GPU all cores but two (at most 8), on a CPU a quarter of the cores (at least
  one when there are two or more), since there the cores also run the training step.

The chosen recipe is written into the run directory as ``recipe.yaml`` (the resolved config,
its header listing each choice and why), so the run can be repeated or resumed from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from densessl.config import (
    ConfigError,
    ExperimentConfig,
    apply_override,
    from_dict,
    load_recipe_data,
    to_dict,
)
from densessl.recipes import quick_methods, recipe_path

GIB = 1024**3
#: below this many images a ResNet-50 at 224 px would mostly memorise the data
LARGE_DATA = 5000
#: smallest GPU that trains the ResNet-50 recipes at a useful batch
LARGE_GPU = 8 * GIB
TARGET_STEPS = {"cpu": 2000, "cuda": 20000}
MAX_EPOCHS = 800
MIN_IMAGES = 16
MIN_STEPS_PER_EPOCH = 8
MIN_BATCH = 8
#: training memory per image of ResNet-50 at 224 px (two views, student + teacher, fp32
#: activations), measured order of magnitude; SlotCon runs both encoders on both views
PER_IMAGE_BYTES_R50 = {"mocov2": 0.15 * GIB, "densecl": 0.17 * GIB, "slotcon": 0.3 * GIB}
#: activation memory of each depth relative to ResNet-50 at the same width and input
ARCH_FACTOR = {"resnet18": 0.35, "resnet34": 0.55, "resnet50": 1.0, "resnet101": 1.45}


@dataclass
class RecipeChoice:
    """What :func:`choose_recipe` picked: a starting recipe, overrides on it, and why."""

    base: str
    overrides: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def override_strings(self) -> list[str]:
        """The overrides as ``key=value`` strings for :func:`densessl.config.apply_override`."""
        # JSON scalars and lists are YAML, which is how override values are read
        return [f"{k}={json.dumps(v)}" for k, v in self.overrides.items()]


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(x)))) if x >= 1 else 1


def _choose(choice: RecipeChoice, key: str, value: Any, why: str) -> None:
    choice.overrides[key] = value
    choice.reasons.append(f"{key} = {value}: {why}")


def choose_recipe(
    method: str, n_images: int, device_kind: str, memory_bytes: int, cores: int
) -> RecipeChoice:
    """Pick a recipe for ``n_images`` images on a ``device_kind`` (``cpu`` or ``cuda``) device with
    ``memory_bytes`` of memory (GPU memory, or RAM on a CPU) and ``cores`` CPU cores."""
    # the rules below are measured for the ResNet methods of two 224 px views; a ViT (MGC) or a
    # multi-crop recipe (the revisited MoCo) starts from a recipe of its own
    supported = sorted(set(quick_methods()) & set(PER_IMAGE_BYTES_R50))
    if method not in supported:
        raise ConfigError(f"--method {method}: no size-aware defaults; choose one of {', '.join(supported)}")
    if n_images < MIN_IMAGES:
        raise ConfigError(f"{n_images} images are too few to pre-train on (at least {MIN_IMAGES})")
    gpu = device_kind == "cuda"
    large = gpu and memory_bytes >= LARGE_GPU and n_images >= LARGE_DATA
    base = f"{method}/coco_r50_800ep" if large else f"quick/{method}_synthetic"
    data = load_recipe_data(_path(base))
    choice = RecipeChoice(base=base)
    where = f"a GPU with {memory_bytes / GIB:.0f} GiB" if gpu else f"a CPU ({cores} cores)"
    if large:
        choice.reasons.append(
            f"recipe {base}: {n_images} images on {where}: the published ResNet-50 recipe at 224 px"
        )
        crop, width, arch = data["views"][0]["crop"]["size"], 1.0, data["model"]["arch"]
    else:
        if n_images < LARGE_DATA:
            why = f"{n_images} images, a small dataset"
        else:
            why = f"{where} (a ResNet-50 needs {LARGE_GPU // GIB} GiB)" if gpu else where
        choice.reasons.append(f"recipe {base}: {why}: a small-input ResNet-18 (output stride 8)")
        (crop, width), arch = (96, 1.0) if gpu else (64, 0.25), data["model"]["arch"]
        device = "GPU" if gpu else "CPU"
        _choose(choice, "model.width", width, "full width on a GPU" if gpu else "quarter width for a CPU")
        _choose(choice, "views.*.crop.size", crop, f"{crop} px views for {device} compute")
        blur = round(crop / 224, 3)
        _choose(choice, "views.*.photometric.blur_sigma_scale", blur, "blur scaled to the crop")

    recipe_batch = int(data["train"]["batch_size"])
    per_image = PER_IMAGE_BYTES_R50[method] * (crop / 224) ** 2 * width * ARCH_FACTOR.get(arch, 1.0)
    if gpu:  # precision auto: bf16 autocast halves the activations
        per_image /= 2
    fits = _pow2_floor(0.8 * memory_bytes / per_image)
    by_data = _pow2_floor(n_images / MIN_STEPS_PER_EPOCH)
    batch = max(MIN_BATCH, min(recipe_batch, fits, by_data))
    limits = {fits: "what fits 80% of the memory", by_data: f"at least {MIN_STEPS_PER_EPOCH} steps per epoch"}
    reason = limits.get(batch, "the recipe's batch") if batch < recipe_batch else "the recipe's batch"
    _choose(choice, "train.batch_size", batch, reason)
    if batch != recipe_batch:
        lr = float(data["optim"]["lr"]) * batch / recipe_batch
        _choose(choice, "optim.lr", float(f"{lr:.4g}"), f"the recipe's lr scaled by {batch}/{recipe_batch}")

    method_data = data["method"]
    if "queue_size" in method_data:
        queue = min(int(method_data["queue_size"]), _pow2_floor(n_images / 4))
        _choose(choice, "method.queue_size", queue, f"at most a quarter of the {n_images} images")
    if "num_prototypes" in method_data:
        protos = min(int(method_data["num_prototypes"]), _pow2_floor(n_images / 4))
        if protos != method_data["num_prototypes"]:
            _choose(choice, "method.num_prototypes", protos, "at most one prototype per 4 images")

    steps_per_epoch = n_images // batch
    target = TARGET_STEPS["cuda" if gpu else "cpu"]
    epochs = max(1, min(MAX_EPOCHS, math.ceil(target / steps_per_epoch)))
    steps = f"{epochs * steps_per_epoch} steps, {steps_per_epoch} per epoch (target {target})"
    _choose(choice, "train.epochs", epochs, steps)
    warmup = float(data["optim"].get("warmup_epochs", 0))
    if warmup > 0.05 * epochs:
        _choose(choice, "optim.warmup_epochs", round(0.05 * epochs, 2), "warm-up at most 5% of the epochs")
    _choose(choice, "train.checkpoint_every", max(1, epochs // 10), "about ten checkpoints over the run")

    if gpu:
        workers, why = min(8, max(1, cores - 2)), f"{cores} cores, the step runs on the GPU"
    else:
        workers = min(4, max(1, cores // 4)) if cores >= 2 else 0
        why = f"{cores} cores, which also run the training step"
    _choose(choice, "data.workers", workers, why)
    return choice


def _path(name: str) -> Path:
    path = recipe_path(name)
    if path is None:  # pragma: no cover - the shipped recipes are tested
        raise ConfigError(f"recipe {name} is missing from the package")
    return path


def build_config(choice: RecipeChoice, source: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config of ``choice`` reading images from ``source``, with the user's ``overrides`` last."""
    data = load_recipe_data(_path(choice.base))
    for override in [*choice.override_strings(), *(overrides or [])]:
        apply_override(data, override)
    data["data"]["source"] = source
    return from_dict(data)


def recipe_text(config: ExperimentConfig, choice: RecipeChoice, n_images: int) -> str:
    """``recipe.yaml``: the resolved config, headed by the choices and their reasons."""
    lines = [
        f"# chosen by densessl pretrain --method {config.method.name} for {n_images} images",
        f"# starting from the recipe {choice.base}:",
        *(f"#   {r}" for r in choice.reasons),
    ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(to_dict(config), sort_keys=False)

"""Batched AutoAugment (ImageNet policy) on uint8 images, drawn per sample from an explicit generator.

torchvision's ``AutoAugment`` transform draws one sub-policy from the global RNG and applies it
to everything it is given, so a batch gets one identical operation. Here every image of a
``(B, 3, H, W)`` uint8 batch gets its own draw, with the semantics of
``torchvision.transforms.v2.AutoAugment(AutoAugmentPolicy.IMAGENET)`` for that image:

- a sub-policy is chosen uniformly among the policy's 25; each of its two operations is applied
  when a uniform draw ``u <= probability``, in order;
- an operation's magnitude is bin ``index`` of 10 bins over the op's range (the ranges of
  torchvision's augmentation space, computed in float32 as torchvision does); a signed op is
  negated when a second uniform draw is ``<= 0.5``;
- geometric ops use nearest interpolation and fill 0; ``Solarize`` inverts pixels
  ``>= 255 * magnitude``; ``Posterize`` keeps ``int(magnitude)`` bits; ``Brightness``,
  ``Color``, ``Contrast`` and ``Sharpness`` use the factor ``1 + magnitude``.

All draws come from a CPU ``torch.Generator`` (:func:`sample_autoaugment_params`), never from
the global or device RNG. The operations themselves are torchvision's functional ops
(``torchvision.transforms.v2.functional``), which accept batches with one parameter for the
whole batch: samples are grouped by (operation, signed magnitude), a small finite set for a
fixed policy, and each group is one call on its sub-batch, on the images' device.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "AUTOAUGMENT_OPS",
    "IMAGENET_POLICY",
    "SIGNED_OPS",
    "apply_autoaugment_op",
    "apply_ops_per_sample",
    "apply_autoaugment",
    "autoaugment_actions",
    "magnitude_bins",
    "sample_autoaugment_params",
]

#: The operations of torchvision's AutoAugment augmentation space; an op's id is its index here.
AUTOAUGMENT_OPS = (
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
#: Ops whose magnitude gets a random sign.
SIGNED_OPS = frozenset(AUTOAUGMENT_OPS[:9])

NUM_BINS = 10
# Posterize's bits for the 10 magnitude bins: 8 down to 4 in equal steps, rounded.
_POSTERIZE_BITS = (8, 8, 7, 7, 6, 6, 5, 5, 4, 4)

Op = tuple[str, float, int | None]

#: The ImageNet policy of Cubuk et al. (AutoAugment, 2019), as torchvision ships it:
#: 25 sub-policies of two (operation, probability, magnitude bin) entries.
IMAGENET_POLICY: tuple[tuple[Op, Op], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

POLICIES = {"imagenet": IMAGENET_POLICY}


def magnitude_bins(op: str, height: int, width: int) -> tuple[float, ...] | None:
    """The 10 unsigned magnitudes of ``op`` for an ``height x width`` image; None for ops without one.

    Ranges: shear 0-0.3, translate 0-150/331 of the side, rotate 0-30 degrees, the four
    enhancement ops 0-0.9, posterize 8-4 bits, solarize threshold 1-0 (of the maximum value).
    """
    ranges = {
        "ShearX": (0.0, 0.3),
        "ShearY": (0.0, 0.3),
        "TranslateX": (0.0, 150.0 / 331.0 * width),
        "TranslateY": (0.0, 150.0 / 331.0 * height),
        "Rotate": (0.0, 30.0),
        "Brightness": (0.0, 0.9),
        "Color": (0.0, 0.9),
        "Contrast": (0.0, 0.9),
        "Sharpness": (0.0, 0.9),
        "Solarize": (1.0, 0.0),
    }
    if op == "Posterize":
        return tuple(float(b) for b in _POSTERIZE_BITS)
    if op in ranges:
        # float32 bins, as torchvision computes them: the magnitudes are then bit-identical.
        return tuple(torch.linspace(*ranges[op], NUM_BINS).tolist())
    if op in AUTOAUGMENT_OPS:
        return None
    raise ValueError(f"unknown AutoAugment op {op!r}; known: {', '.join(AUTOAUGMENT_OPS)}")


def apply_autoaugment_op(images: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """One AutoAugment op with one (signed) magnitude on a whole uint8 batch ``(..., 3, H, W)``."""
    nearest = InterpolationMode.NEAREST
    if op in ("ShearX", "ShearY"):
        # AutoAugment's magnitude is the shear coefficient; torchvision's affine takes an angle
        # whose tangent is the coefficient. The shear is about the top-left corner.
        angle = math.degrees(math.atan(magnitude))
        shear = [angle, 0.0] if op == "ShearX" else [0.0, angle]
        return TF.affine(
            images,
            angle=0.0,
            translate=[0, 0],
            scale=1.0,
            shear=shear,
            interpolation=nearest,
            fill=None,
            center=[0, 0],
        )
    if op in ("TranslateX", "TranslateY"):
        # whole pixels, truncated toward zero like the reference transform
        shift = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        return TF.affine(
            images, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=nearest, fill=None
        )
    if op == "Rotate":
        return TF.rotate(images, angle=magnitude, interpolation=nearest, fill=None)
    if op == "Brightness":
        return TF.adjust_brightness(images, brightness_factor=1.0 + magnitude)
    if op == "Color":
        return TF.adjust_saturation(images, saturation_factor=1.0 + magnitude)
    if op == "Contrast":
        return TF.adjust_contrast(images, contrast_factor=1.0 + magnitude)
    if op == "Sharpness":
        return TF.adjust_sharpness(images, sharpness_factor=1.0 + magnitude)
    if op == "Posterize":
        return TF.posterize(images, bits=int(magnitude))
    if op == "Solarize":
        return TF.solarize(images, threshold=255 * magnitude)
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    if op == "Invert":
        return TF.invert(images)
    raise ValueError(f"unknown AutoAugment op {op!r}; known: {', '.join(AUTOAUGMENT_OPS)}")


def apply_ops_per_sample(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Apply op ``ops[b]`` (an index into :data:`AUTOAUGMENT_OPS`, -1 for none) with magnitude
    ``magnitudes[b]`` to sample ``b`` of a uint8 batch; the input is not modified.

    Samples sharing (op, magnitude) form one sub-batch and one torchvision call.
    """
    groups: dict[tuple[int, float], list[int]] = {}
    for b, (op, mag) in enumerate(zip(ops.tolist(), magnitudes.tolist(), strict=True)):
        if op >= 0:
            groups.setdefault((op, mag), []).append(b)
    out = images.clone()
    for (op, mag), members in groups.items():
        if len(members) == images.shape[0]:
            out = apply_autoaugment_op(out, AUTOAUGMENT_OPS[op], mag)
            continue
        idx = torch.tensor(members, device=images.device)
        out.index_copy_(0, idx, apply_autoaugment_op(images.index_select(0, idx), AUTOAUGMENT_OPS[op], mag))
    return out


def _policy(name: str) -> tuple[tuple[Op, Op], ...]:
    if name not in POLICIES:
        raise ValueError(f"unknown AutoAugment policy {name!r}; known: {', '.join(POLICIES)}")
    return POLICIES[name]


def sample_autoaugment_params(
    batch: int, generator: torch.Generator, policy: str = "imagenet"
) -> dict[str, torch.Tensor]:
    """Draw every sample's AutoAugment randomness on the CPU from ``generator``.

    Keys: ``policy`` int64 ``(B,)`` the sub-policy index; ``apply`` float ``(B, 2)`` uniforms, op
    ``k`` runs when ``apply[:, k] <= probability``; ``sign`` float ``(B, 2)`` uniforms, a signed
    op's magnitude is negated when ``sign[:, k] <= 0.5``. The number of draws depends only on
    ``batch``.
    """
    table = _policy(policy)
    return {
        "policy": torch.randint(len(table), (batch,), generator=generator),
        "apply": torch.rand(batch, 2, generator=generator),
        "sign": torch.rand(batch, 2, generator=generator),
    }


def autoaugment_actions(
    params: dict[str, torch.Tensor], height: int, width: int, policy: str = "imagenet"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ops and signed magnitudes ``(B, 2)`` from :func:`sample_autoaugment_params`'s draws.

    ``ops`` holds indices into :data:`AUTOAUGMENT_OPS` (-1 where the op does not run);
    ``magnitudes`` float64 (0 for ops without a magnitude).
    """
    table = _policy(policy)
    op_ids, probs, mags, signed = [], [], [], []
    for sub_policy in table:
        for name, prob, level in sub_policy:
            bins = magnitude_bins(name, height, width)
            op_ids.append(AUTOAUGMENT_OPS.index(name))
            probs.append(prob)
            mags.append(0.0 if bins is None or level is None else bins[level])
            signed.append(bins is not None and name in SIGNED_OPS)
    shape = (len(table), 2)
    chosen = params["policy"].to("cpu")
    op_t = torch.tensor(op_ids).view(shape)[chosen]
    # float32 probabilities: the reference compares a float32 draw with a Python float, which
    # PyTorch does in float32 (a draw equal to float32(p) runs the op)
    prob_t = torch.tensor(probs, dtype=torch.float32).view(shape)[chosen]
    mag_t = torch.tensor(mags, dtype=torch.float64).view(shape)[chosen]
    signed_t = torch.tensor(signed).view(shape)[chosen]
    runs = params["apply"].to("cpu", torch.float32) <= prob_t
    negate = signed_t & (params["sign"].to("cpu", torch.float32) <= 0.5)
    return torch.where(runs, op_t, -1), torch.where(negate, -mag_t, mag_t)


def apply_autoaugment(
    images: torch.Tensor,
    generator: torch.Generator | None,
    policy: str = "imagenet",
    params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """AutoAugment with an independent draw per sample on a uint8 batch ``(B, 3, H, W)``, any device.

    Draws come from ``generator`` (:func:`sample_autoaugment_params`) unless ``params`` is given.
    Returns a new uint8 batch; the input is not modified.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"apply_autoaugment needs a uint8 batch (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if params is None:
        if generator is None:
            raise ValueError("apply_autoaugment needs a generator when params are not given")
        params = sample_autoaugment_params(images.shape[0], generator, policy)
    ops, magnitudes = autoaugment_actions(params, images.shape[-2], images.shape[-1], policy)
    out = images
    for slot in range(ops.shape[1]):
        out = apply_ops_per_sample(out, ops[:, slot], magnitudes[:, slot])
    return out

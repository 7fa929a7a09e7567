"""Batched colour augmentations on float images and input normalisation (CPU or GPU tensors).

All augmentations work on a batch ``(B, 3, H, W)`` of float images in ``[0, 1]`` on any device,
with one random parameter set per sample. Parameters are drawn from an explicit CPU
``torch.Generator`` and then moved to the images' device, so a given seed gives the same
augmentation on CPU and GPU and never touches the device RNG.

Each batched op reproduces the single-image semantics of
``torchvision.transforms.v2.functional`` (``adjust_brightness``, ``adjust_contrast``,
``adjust_saturation``, ``adjust_hue``, ``rgb_to_grayscale``, ``gaussian_blur``, ``solarize``)
up to float rounding; :func:`color_jitter` applies the four jitter ops in a per-sample random
order, like ``ColorJitter``.

Order used by :func:`apply_photometric` (MoCo-v2 "aug+" and SlotCon / MGC):
colour jitter (prob ``jitter_p``) -> grayscale (``grayscale_p``) -> Gaussian blur (``blur_p``)
-> solarize (``solarize_p``). Normalisation (:func:`normalize`) is a separate last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from densessl.augment.spec import MOCO_V2, SLOTCON_VIEW1, SLOTCON_VIEW2, PhotometricConfig

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOCO_V2",
    "SLOTCON_VIEW1",
    "SLOTCON_VIEW2",
    "PhotometricConfig",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_photometric",
    "color_jitter",
    "gaussian_blur",
    "grayscale",
    "normalize",
    "rgb_to_gray",
    "sample_photometric_params",
    "solarize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Slot ids of the colour-jitter ops, the order torchvision's ColorJitter indexes them.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Map a batch (B, 3, H, W) of uint8 or [0, 1] float images to ImageNet-normalised floats."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


# --------------------------------------------------------------------------------------------
# Batched single ops
# --------------------------------------------------------------------------------------------


def _per_sample(values: torch.Tensor | float, images: torch.Tensor) -> torch.Tensor:
    """A ``(B, 1, 1, 1)`` tensor of per-sample values on the images' device and dtype."""
    t = torch.as_tensor(values, dtype=images.dtype)
    if t.ndim == 0:
        t = t.expand(images.shape[0])
    return t.to(images.device, non_blocking=True).view(-1, 1, 1, 1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # Same algebra as torchvision's _blend: factor * img + (1 - factor) * other, clamped.
    f = _per_sample(factor, images)
    return torch.addcmul(other * (1.0 - f), images, f).clamp_(0.0, 1.0)


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``(B, 1, H, W)`` with torchvision's weights (0.2989, 0.587, 0.114)."""
    r, g, b = images.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Per-sample ``adjust_brightness``: ``clamp(factor * img, 0, 1)``."""
    return (images * _per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Per-sample ``adjust_contrast``: blend with the mean of the image's grayscale."""
    mean = rgb_to_gray(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Per-sample ``adjust_saturation``: blend with the image's grayscale."""
    return _blend(images, rgb_to_gray(images), factor)


def adjust_hue(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Per-sample ``adjust_hue``: rotate the HSV hue by ``factor`` (in turns, |factor| <= 0.5)."""
    shift = _per_sample(factor, images).view(-1, 1, 1)
    r, g, b = images.unbind(dim=-3)
    maxc = images.amax(dim=-3)
    delta = maxc - images.amin(dim=-3)
    # Grey pixels (delta == 0) come back as maxc whatever their hue; only guard the division
    # (their channel differences are 0, so 0 * (1 / tiny) = 0).
    inv = delta.clamp_min(torch.finfo(delta.dtype).tiny).reciprocal_()
    # Hue in sextants, [0, 6) after the shift: the usual max-channel case split.
    h6 = torch.where(
        maxc == r,
        (g - b).mul_(inv),
        torch.where(maxc == g, (b - r).mul_(inv).add_(2.0), (r - g).mul_(inv).add_(4.0)),
    )
    h6 = h6.add_(shift * 6.0).remainder_(6.0)
    # HSV -> RGB with piecewise-linear hue ramps: channel = v - delta * (1 - ramp), where
    # v * s = delta, so the saturation is never formed explicitly.
    low = maxc - delta
    red = (h6 - 3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    green = (h6 - 2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    blue = (h6 - 4.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    out = torch.empty_like(images)
    for c, ramp in enumerate((red, green, blue)):
        torch.addcmul(low, delta, ramp, out=out.select(-3, c))
    return out


def color_jitter(
    images: torch.Tensor,
    brightness: torch.Tensor | None,
    contrast: torch.Tensor | None,
    saturation: torch.Tensor | None,
    hue: torch.Tensor | None,
    order: torch.Tensor,
) -> torch.Tensor:
    """Apply the four jitter ops in a per-sample order (torchvision ``ColorJitter`` semantics).

    Args:
        images: ``(B, 3, H, W)`` floats in ``[0, 1]``.
        brightness, contrast, saturation, hue: ``(B,)`` factors, or ``None`` to skip the op.
        order: ``(B, 4)`` int64; ``order[b, k]`` is the op applied in slot ``k`` to sample ``b``
            (0 brightness, 1 contrast, 2 saturation, 3 hue), a permutation per row, like
            ``ColorJitter.get_params``'s ``fn_idx``.

    Brightness, contrast and saturation are all blends ``f * img + (1 - f) * other`` (``other``
    is 0, the grayscale mean or the grayscale image), so each slot is one fused blend over the
    whole batch; hue is computed only for the samples whose slot holds it.
    """
    batch = images.shape[0]
    order_cpu = order.to("cpu")
    dev = images.device
    ones = torch.ones(batch, dtype=images.dtype)
    factors = {
        BRIGHTNESS: brightness,
        CONTRAST: contrast,
        SATURATION: saturation,
    }
    out = images
    for slot in range(4):
        op = order_cpu[:, slot]
        # Samples not doing a blend op in this slot get factor 1, which is an exact identity.
        f = ones.clone()
        blend_any = False
        for op_id, values in factors.items():
            if values is None:
                continue
            sel = op == op_id
            if bool(sel.any()):
                f = torch.where(sel, values.to("cpu", images.dtype), f)
                blend_any = True
        if blend_any:
            use_con = (op == CONTRAST) & (contrast is not None)
            use_sat = (op == SATURATION) & (saturation is not None)
            gray = None
            other = torch.zeros((), dtype=out.dtype, device=dev)
            if bool(use_con.any()) or bool(use_sat.any()):
                gray = rgb_to_gray(out)
                con = _per_sample(use_con.to(out.dtype), out)
                sat = _per_sample(use_sat.to(out.dtype), out)
                other = gray * sat + gray.mean(dim=(-3, -2, -1), keepdim=True) * con
            out = _blend(out, other, f)
        if hue is not None:
            sel = op == HUE
            if bool(sel.any()):
                out = _on_subset(
                    out,
                    sel,
                    lambda x, idx: adjust_hue(x, hue.to("cpu")[idx]),
                    inplace=out is not images,
                )
    return out if out is not images else images.clone()


def grayscale(images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """3-channel grayscale (``rgb_to_grayscale(num_output_channels=3)``) where ``mask`` is True."""
    gray = rgb_to_gray(images).expand_as(images)
    if mask is None:
        return gray.contiguous()
    m = mask.to(images.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(m, gray, images)


def blur_radius(sigma: float, height: int, width: int) -> int:
    """Kernel radius for std ``sigma``: ``ceil(3 * sigma)``, capped so ``2r + 1 <= min(H, W)``."""
    return max(0, min(math.ceil(3.0 * sigma), (min(height, width) - 1) // 2))


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Per-sample separable Gaussian blur of std ``sigma`` (pixels), reflect padding.

    Kernel rule (documented for reproducibility): radius ``r = ceil(3 * sigma)`` (kernel size
    ``2r + 1``, i.e. +-3 std, 99.7 % of the mass), capped so the kernel is at most the image size;
    taps ``exp(-d^2 / (2 sigma^2))`` for integer offsets ``|d| <= r``, normalised to sum 1. This
    equals ``torchvision.transforms.v2.functional.gaussian_blur(img, 2r + 1, sigma)`` per image.
    The batch is convolved with the largest radius; taps beyond a sample's own radius are zero.
    """
    batch, channels, height, width = images.shape
    sig = torch.as_tensor(sigma, dtype=torch.float64).to("cpu")
    if sig.ndim == 0:
        sig = sig.expand(batch)
    # Same rule as blur_radius, vectorised.
    radii = torch.ceil(3.0 * sig).clamp_(0, (min(height, width) - 1) // 2)
    big = int(radii.max().item()) if batch else 0
    if big == 0:
        return images.clone()
    offsets = torch.arange(-big, big + 1, dtype=torch.float64)
    taps = torch.exp(-(offsets[None, :] ** 2) / (2.0 * sig[:, None] ** 2))
    taps = torch.where(offsets[None, :].abs() <= radii[:, None], taps, torch.zeros_like(taps))
    taps = taps / taps.sum(dim=1, keepdim=True)
    kernel = taps.to(images.dtype).repeat_interleave(channels, dim=0).to(images.device, non_blocking=True)
    size = 2 * big + 1
    x = images.reshape(1, batch * channels, height, width)
    x = F.pad(x, (big, big, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(-1, 1, 1, size), groups=batch * channels)
    x = F.pad(x, (0, 0, big, big), mode="reflect")
    x = F.conv2d(x, kernel.view(-1, 1, size, 1), groups=batch * channels)
    return x.view(batch, channels, height, width)


def solarize(images: torch.Tensor, threshold: float = 0.5, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Invert pixels ``>= threshold`` (torchvision ``solarize`` on floats) where ``mask`` is True."""
    cond = images >= threshold
    if mask is not None:
        cond = cond & mask.to(images.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(cond, 1.0 - images, images)


def _on_subset(
    images: torch.Tensor,
    mask: torch.Tensor,
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inplace: bool = False,
) -> torch.Tensor:
    """Apply ``fn(sub_images, cpu_indices)`` to the samples selected by the CPU bool ``mask``.

    ``inplace`` writes the results into ``images`` (only for tensors this module allocated),
    which saves a full copy of the batch.
    """
    mask = mask.to("cpu")
    if bool(mask.all()):
        return fn(images, torch.arange(images.shape[0]))
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return images
    idx_dev = idx.to(images.device, non_blocking=True)
    sub = fn(images.index_select(0, idx_dev), idx)
    if inplace:
        return images.index_copy_(0, idx_dev, sub)
    return images.index_copy(0, idx_dev, sub)


# --------------------------------------------------------------------------------------------
# Parameter sampling and the full pipeline
# --------------------------------------------------------------------------------------------


def _jitter_range(value: float, center: float = 1.0) -> tuple[float, float] | None:
    if value == 0:
        return None
    return max(0.0, center - value), center + value


def sample_photometric_params(
    batch: int, config: PhotometricConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw all per-sample parameters on the CPU from ``generator``.

    The number of draws is independent of the config's probabilities, so two configs consume
    the generator identically. Returned (CPU) keys: ``jitter`` / ``gray`` / ``blur`` /
    ``solarize`` bool masks ``(B,)``; ``brightness``, ``contrast``, ``saturation``, ``hue``,
    ``sigma`` float ``(B,)``; ``order`` int64 ``(B, 4)``.
    """

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(batch).uniform_(lo, hi, generator=generator)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < p

    params: dict[str, torch.Tensor] = {"jitter": coin(config.jitter_p)}
    for name in ("brightness", "contrast", "saturation"):
        rng = _jitter_range(getattr(config, name))
        params[name] = uniform(*rng) if rng is not None else uniform(1.0, 1.0)
    params["hue"] = uniform(-config.hue, config.hue)
    # argsort of iid uniforms is a uniformly random permutation per row.
    params["order"] = torch.rand(batch, 4, generator=generator).argsort(dim=1)
    params["gray"] = coin(config.grayscale_p)
    params["blur"] = coin(config.blur_p)
    params["sigma"] = uniform(*config.blur_sigma) * config.blur_sigma_scale
    params["solarize"] = coin(config.solarize_p)
    return params


def apply_photometric(
    images: torch.Tensor,
    config: PhotometricConfig,
    generator: torch.Generator | None,
    params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Jitter (p) -> grayscale (p) -> blur (p) -> solarize (p), per sample; returns [0, 1] floats.

    ``images`` is ``(B, 3, H, W)``, uint8 or float in ``[0, 1]``, on any device; the input is not
    modified. Parameters come from :func:`sample_photometric_params` with ``generator`` unless
    ``params`` is given (then ``generator`` is unused and may be ``None``). The result is not
    normalised (see :func:`normalize`).
    """
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if params is None:
        if generator is None:
            raise ValueError("apply_photometric needs a generator when params are not given")
        params = sample_photometric_params(images.shape[0], config, generator)
    out = images
    if config.jitter_p > 0:
        ops = {
            "brightness": params["brightness"] if config.brightness else None,
            "contrast": params["contrast"] if config.contrast else None,
            "saturation": params["saturation"] if config.saturation else None,
            "hue": params["hue"] if config.hue else None,
        }
        out = _on_subset(
            out,
            params["jitter"],
            lambda x, idx: color_jitter(
                x,
                *(None if v is None else v[idx] for v in ops.values()),
                order=params["order"][idx],
            ),
        )
    if config.grayscale_p > 0:
        out = _on_subset(out, params["gray"], lambda x, idx: grayscale(x), inplace=out is not images)
    if config.blur_p > 0:
        out = _on_subset(
            out,
            params["blur"],
            lambda x, idx: gaussian_blur(x, params["sigma"][idx]),
            inplace=out is not images,
        )
    if config.solarize_p > 0 and bool(params["solarize"].any()):
        out = solarize(out, config.solarize_threshold, params["solarize"])
    return out if out is not images else images.clone()

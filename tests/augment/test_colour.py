"""Batched photometric augmentations against torchvision's single-image functions."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from densessl import augment as A

ATOL = 2e-6


def _images(batch: int = 8, height: int = 20, width: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 3, height, width), generator=g).float() / 255.0
    x[0] = x[0, :1]  # a grey image: hue undefined, saturation a no-op
    x[1, :, :5] = 1.0  # saturated block: clamping and ties between max channels
    x[1, 0, 5:10] = x[1, 1, 5:10]
    return x


def _per_image(fn, images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(img, float(f)) for img, f in zip(images, factors, strict=True)])


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (A.adjust_brightness, TF.adjust_brightness, [0.0, 0.6, 1.0, 1.4, 0.9, 1.2, 2.0, 0.3]),
        (A.adjust_contrast, TF.adjust_contrast, [0.0, 0.6, 1.0, 1.4, 0.9, 1.2, 2.0, 0.3]),
        (A.adjust_saturation, TF.adjust_saturation, [0.0, 0.6, 1.0, 1.4, 0.9, 1.2, 2.0, 0.3]),
        (A.adjust_hue, TF.adjust_hue, [-0.5, -0.1, 0.0, 0.05, 0.1, 0.5, 0.33, -0.27]),
    ],
)
def test_single_ops_match_torchvision(ours, theirs, factors) -> None:
    x = _images()
    f = torch.tensor(factors)
    out = ours(x, f)
    ref = _per_image(theirs, x, f)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_hue_random_images_match_torchvision() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(32, 3, 9, 11, generator=g)
    h = torch.empty(32).uniform_(-0.5, 0.5, generator=g)
    torch.testing.assert_close(A.adjust_hue(x, h), _per_image(TF.adjust_hue, x, h), atol=ATOL, rtol=0)


def test_grayscale_and_solarize_match_torchvision() -> None:
    x = _images()
    mask = torch.tensor([True, False, True, True, False, False, True, False])
    gray = A.grayscale(x, mask)
    for k in range(len(x)):
        ref = TF.rgb_to_grayscale(x[k], num_output_channels=3) if mask[k] else x[k]
        torch.testing.assert_close(gray[k], ref, atol=ATOL, rtol=0)
    # A grey image stays grey (torchvision's weights sum to 0.9999, hence the tolerance).
    torch.testing.assert_close(A.grayscale(x)[0], x[0], atol=1e-4, rtol=0)
    sol = A.solarize(x, 0.5, mask)
    for k in range(len(x)):
        ref = TF.solarize(x[k], 0.5) if mask[k] else x[k]
        assert torch.equal(sol[k], ref)
    # 0.5 on uint8-derived floats is PIL's threshold 128.
    levels = torch.tensor([127, 128]).float().div(255).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    sol_levels = A.solarize(levels)[0, 0, 0]
    assert sol_levels[0].item() == levels[0, 0, 0, 0].item()  # 127 kept
    assert sol_levels[1].item() == pytest.approx(127 / 255, abs=1e-7)  # 128 inverted to 127


def test_gaussian_blur_matches_torchvision_per_sample_sigma() -> None:
    x = _images(batch=6)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.3, 10.0])  # the last one hits the size cap
    out = A.gaussian_blur(x, sigma)
    for k, s in enumerate(sigma.tolist()):
        r = A.blur_radius(s, 20, 24)
        ref = TF.gaussian_blur(x[k], [2 * r + 1, 2 * r + 1], [s, s]) if r > 0 else x[k]
        torch.testing.assert_close(out[k], ref, atol=ATOL, rtol=0)
    assert A.blur_radius(0.1, 224, 224) == 1
    assert A.blur_radius(2.0, 224, 224) == 6
    assert A.blur_radius(10.0, 20, 24) == 9  # 2r + 1 <= min(H, W)
    # Blur preserves the mean of a constant image and reduces variance.
    assert out[0].mean().item() == pytest.approx(x[0].mean().item(), abs=1e-5)
    assert out[3].var().item() < x[3].var().item() * 0.5


def test_color_jitter_random_order_matches_torchvision() -> None:
    x = _images(batch=12)
    g = torch.Generator().manual_seed(1)
    b = torch.empty(12).uniform_(0.6, 1.4, generator=g)
    c = torch.empty(12).uniform_(0.6, 1.4, generator=g)
    s = torch.empty(12).uniform_(0.6, 1.4, generator=g)
    h = torch.empty(12).uniform_(-0.1, 0.1, generator=g)
    order = torch.rand(12, 4, generator=g).argsort(dim=1)
    out = A.color_jitter(x, b, c, s, h, order)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    facs = [b, c, s, h]
    for k in range(12):
        ref = x[k]
        for op in order[k].tolist():
            ref = fns[op](ref, float(facs[op][k]))
        torch.testing.assert_close(out[k], ref, atol=ATOL, rtol=0)
    # Order matters: reversing the permutation changes the result.
    assert not torch.allclose(A.color_jitter(x, b, c, s, h, order.flip(1)), out, atol=1e-4)
    # A disabled op (None) is skipped.
    no_hue = A.color_jitter(x, b, c, s, None, order)
    for k in range(12):
        ref = x[k]
        for op in order[k].tolist():
            if op != A.HUE:
                ref = fns[op](ref, float(facs[op][k]))
        torch.testing.assert_close(no_hue[k], ref, atol=ATOL, rtol=0)


def test_full_pipeline_equals_torchvision_composition() -> None:
    x = _images(batch=16, seed=5)
    cfg = A.PhotometricConfig(solarize_p=0.5, grayscale_p=0.4)
    params = A.sample_photometric_params(16, cfg, torch.Generator().manual_seed(7))
    out = A.apply_photometric(x, cfg, None, params=params)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    names = ["brightness", "contrast", "saturation", "hue"]
    for k in range(16):
        ref = x[k]
        if params["jitter"][k]:
            for op in params["order"][k].tolist():
                ref = fns[op](ref, float(params[names[op]][k]))
        if params["gray"][k]:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        if params["blur"][k]:
            s = float(params["sigma"][k])
            r = A.blur_radius(s, 20, 24)
            ref = TF.gaussian_blur(ref, [2 * r + 1] * 2, [s, s])
        if params["solarize"][k]:
            ref = TF.solarize(ref, 0.5)
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=0)
    # Every branch was exercised by this seed.
    for key in ("jitter", "gray", "blur", "solarize"):
        assert 0 < int(params[key].sum()) < 16, key


def test_apply_is_reproducible_and_pure() -> None:
    x = _images(batch=10)
    x_copy = x.clone()
    a = A.apply_photometric(x, A.SLOTCON_VIEW2, torch.Generator().manual_seed(11))
    b = A.apply_photometric(x, A.SLOTCON_VIEW2, torch.Generator().manual_seed(11))
    c = A.apply_photometric(x, A.SLOTCON_VIEW2, torch.Generator().manual_seed(12))
    assert torch.equal(x, x_copy)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # uint8 input is accepted and scaled.
    u = (x * 255).round().to(torch.uint8)
    d = A.apply_photometric(u, A.SLOTCON_VIEW2, torch.Generator().manual_seed(11))
    torch.testing.assert_close(d, a, atol=1e-5, rtol=0)


def test_identity_config_and_forced_ops() -> None:
    x = _images()
    off = A.PhotometricConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    out = A.apply_photometric(x, off, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and out is not x
    gray_only = dataclasses.replace(off, grayscale_p=1.0)
    out = A.apply_photometric(x, gray_only, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, A.grayscale(x))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_parameter_laws_and_generator_consumption() -> None:
    n = 4000
    cfg = A.PhotometricConfig(blur_sigma_scale=64 / 224)
    p = A.sample_photometric_params(n, cfg, torch.Generator().manual_seed(0))
    assert p["brightness"].min() >= 0.6 and p["brightness"].max() <= 1.4
    assert p["saturation"].min() >= 0.6 and p["saturation"].max() <= 1.4
    assert p["hue"].abs().max() <= 0.1
    assert p["sigma"].min() >= 0.1 * 64 / 224 - 1e-6 and p["sigma"].max() <= 2.0 * 64 / 224 + 1e-6
    assert torch.equal(p["order"].sort(dim=1).values, torch.arange(4).expand(n, 4))
    # Each op lands in slot 0 about a quarter of the time.
    counts = torch.bincount(p["order"][:, 0], minlength=4).float() / n
    assert torch.all((counts - 0.25).abs() < 0.03)
    assert abs(p["jitter"].float().mean().item() - 0.8) < 0.03
    assert abs(p["gray"].float().mean().item() - 0.2) < 0.03
    assert abs(p["blur"].float().mean().item() - 0.5) < 0.03
    assert not p["solarize"].any()
    # Different probabilities consume the generator identically (same factors drawn).
    q = A.sample_photometric_params(n, A.SLOTCON_VIEW1, torch.Generator().manual_seed(0))
    assert torch.equal(p["order"], q["order"]) and torch.equal(p["hue"], q["hue"])
    assert q["saturation"].min() >= 0.8 and q["saturation"].max() <= 1.2


def test_normalize_unchanged() -> None:
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = A.normalize(x)
    expected = (1.0 - torch.tensor(A.IMAGENET_MEAN)) / torch.tensor(A.IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], expected)

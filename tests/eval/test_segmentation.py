"""The frozen dense probes: the linear probe, the FCN head, and the protocol presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densessl.augment import normalize
from densessl.config import ConfigError
from densessl.eval.segmentation import (
    FCNHead,
    evaluate_probe,
    extract_features,
    resolve_preset,
    run_linear_probe,
    run_probe,
    train_fcn_probe,
    train_linear_probe,
)
from tests import helpers
from tests.helpers import stripe_features


class TinyBackbone(nn.Module):
    """Satisfies the backbone contract: normalised (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, out_channels: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, out_channels, kernel_size=4, stride=4)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _block_masks(
    n: int, num_classes: int, grid: int, cell: int, seed: int, stripes: bool = False
) -> torch.Tensor:
    """(n, grid*cell, grid*cell) masks that are constant on cell x cell blocks.

    With ``stripes`` every row of blocks is the same (vertical stripes).
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_classes, (n, 1 if stripes else grid, grid), generator=gen)
    coarse = coarse.expand(n, grid, grid)
    return coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2).to(torch.uint8)


def _label_features(masks: torch.Tensor, num_classes: int, grid: int, seed: int) -> torch.Tensor:
    """8x8 features whose first channels one-hot encode the block label (scaled, offset, noisy)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = masks[:, :: masks.shape[1] // grid, :: masks.shape[2] // grid].long()
    onehot = F.one_hot(coarse, num_classes).permute(0, 3, 1, 2).float()
    noise = torch.randn(masks.shape[0], 4, grid, grid, generator=gen)
    # An arbitrary scale and offset: standardisation must make them irrelevant.
    return torch.cat([onehot * 40.0 + 7.0, noise * 3.0], dim=1)


PROBE = dict(epochs=8, lr=0.1, batch_size=32, train_resolution=32)


def test_trivial_features_reach_perfect_miou() -> None:
    # Stripes, not a block checkerboard: bilinear upsampling of logits blends the four nearest
    # cells, so near a corner whose two edge neighbours share a class that class wins even with
    # a perfect head. Along one axis the nearest cell always dominates.
    k = 4
    train_m = _block_masks(200, k, 8, 8, seed=0, stripes=True)
    val_m = _block_masks(60, k, 8, 8, seed=1, stripes=True)
    train_f = _label_features(train_m, k, 8, 2)
    train_m[:, :3, :] = 255  # an ignore band must not disturb training or scoring
    val_f = _label_features(val_m, k, 8, 3)
    val_m[:, :, -2:] = 255
    head = train_linear_probe(train_f, train_m, k, seed=0, **PROBE)
    r = evaluate_probe(head, val_f, val_m, k)
    assert r["miou"] > 0.99
    assert r["eval_resolution"] == [64, 64]


def test_noise_features_stay_low() -> None:
    k = 4
    gen = torch.Generator().manual_seed(5)
    train_m = _block_masks(200, k, 8, 8, seed=0)
    val_m = _block_masks(60, k, 8, 8, seed=1)
    head = train_linear_probe(torch.randn(200, 16, 8, 8, generator=gen), train_m, k, seed=0, **PROBE)
    r = evaluate_probe(head, torch.randn(60, 16, 8, 8, generator=gen), val_m, k)
    assert r["miou"] < 0.3


def test_deterministic_given_seed() -> None:
    k = 3
    masks = _block_masks(50, k, 8, 8, seed=0)
    feats = torch.randn(50, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    a = train_linear_probe(feats, masks, k, seed=7, **PROBE)
    b = train_linear_probe(feats, masks, k, seed=7, **PROBE)
    c = train_linear_probe(feats, masks, k, seed=8, **PROBE)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)


def test_standardisation_is_folded_into_head() -> None:
    # Standardised training is invariant to a per-channel affine map of the features, so the
    # folded heads must predict the same labels on the raw features of either scale.
    k = 3
    masks = _block_masks(40, k, 8, 8, seed=0)
    feats = torch.randn(40, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    scale = torch.linspace(0.01, 100.0, 6).view(1, 6, 1, 1)
    scaled = feats * scale + 5.0
    a = train_linear_probe(feats, masks, k, seed=1, **PROBE)
    b = train_linear_probe(scaled, masks, k, seed=1, **PROBE)
    torch.testing.assert_close(a(feats), b(scaled), atol=1e-3, rtol=1e-3)


def test_conv_then_upsample_equals_upsample_then_conv() -> None:
    conv = nn.Conv2d(5, 3, kernel_size=1)
    x = torch.randn(2, 5, 8, 8)
    up = F.interpolate(conv(x), size=(32, 32), mode="bilinear", align_corners=False)
    pu = conv(F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False))
    torch.testing.assert_close(up, pu, atol=1e-5, rtol=1e-5)


def _samples(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i in range(n):
        h, w = (48, 40) if i % 2 else (64, 64)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.choice(np.array([0, 3, 255], dtype=np.uint8), size=(h, w))
        out.append((img, mask))
    return out


def test_extract_features_shapes_and_nearest_masks() -> None:
    backbone = TinyBackbone().train()
    samples = _samples(5, np.random.default_rng(0))
    feats, masks = extract_features(backbone, samples, image_size=32, batch_size=2)
    assert feats.shape == (5, 8, 8, 8) and feats.dtype == torch.float32
    assert masks.shape == (5, 32, 32) and masks.dtype == torch.uint8
    assert set(masks.unique().tolist()) <= {0, 3, 255}
    assert backbone.training  # mode restored


def test_extract_features_matches_direct_forward_at_native_size() -> None:
    backbone = TinyBackbone()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    # A mask made of 2x2 blocks must downsample to exactly its block labels.
    coarse = rng.integers(0, 5, (32, 32)).astype(np.uint8)
    mask64 = coarse.repeat(2, 0).repeat(2, 1)
    feats, masks = extract_features(backbone, [(img, mask64[:32, :32])], image_size=32)
    with torch.no_grad():
        direct = backbone(normalize(torch.from_numpy(img).permute(2, 0, 1)[None]))
    torch.testing.assert_close(feats, direct)
    assert np.array_equal(masks[0].numpy(), mask64[:32, :32])
    _, down = extract_features(backbone, [(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), mask64)], 32)
    assert np.array_equal(down[0].numpy(), _down(mask64))
    assert np.array_equal(down[0].numpy(), coarse)


def _down(mask: np.ndarray) -> np.ndarray:
    """Pixel-centre nearest downsampling by 2: output pixel i samples input pixel 2i + 1."""
    return mask[1::2, 1::2]


def test_extract_features_checks_out_channels() -> None:
    backbone = TinyBackbone()
    backbone.out_channels = 9
    with pytest.raises(ValueError):
        extract_features(backbone, _samples(1, np.random.default_rng(0)), image_size=32)


def test_run_linear_probe_end_to_end() -> None:
    # Colour encodes the class, so even a random conv backbone carries the label.
    rng = np.random.default_rng(0)
    palette = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230]], dtype=np.uint8)

    def make(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for _ in range(n):
            coarse = rng.integers(0, 3, (8, 8)).astype(np.uint8)
            mask = coarse.repeat(8, 0).repeat(8, 1)
            img = palette[mask] + rng.integers(0, 20, (64, 64, 3), dtype=np.uint8)
            out.append((img, mask))
        return out

    r = run_linear_probe(
        TinyBackbone(16), make(60), make(20), 3, image_size=64, seeds=(0, 1), device="cpu", **PROBE
    )
    assert r["feature_shape"] == [16, 16, 16]
    assert len(r["miou_per_seed"]) == 2 and r["seeds"] == [0, 1]
    assert r["miou"] > 0.9 and 0.0 <= r["miou_std"] < 0.05
    assert r["num_classes"] == 3 and r["image_size"] == 64 and r["train_resolution"] == 32
    assert isinstance(r["seconds"], float) and 0 <= r["pixel_acc"] <= 1


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny; on a loaded 2-core machine a second intra-op thread only adds
    # spin-waiting (an FCN probe step went from ~4 ms to ~50 ms).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_presets_resolve() -> None:
    leo = resolve_preset("leopart", arch="resnet50")
    assert (leo["image_size"], leo["train_resolution"], leo["epochs"], leo["batch_size"]) == (
        448,
        100,
        25,
        60,
    )
    assert leo["lr"] == 0.1 and leo["seeds"] == (400,) and leo["milestones"] is None
    assert resolve_preset("leopart", arch="vit_small")["lr"] == 0.01
    d = resolve_preset(None, dataset_image_size=64, epochs=None, head="fcn")
    assert d["image_size"] == 64 and d["train_resolution"] == 32 and d["epochs"] == 25 and d["head"] == "fcn"
    with pytest.raises(ConfigError, match="preset"):
        resolve_preset("nope")
    with pytest.raises(ConfigError, match="setting"):
        resolve_preset("leopart", colour=3)
    with pytest.raises(ConfigError, match="image size"):
        resolve_preset("default")


def test_fcn_head_learns_and_is_deterministic() -> None:
    k = 3
    train_f, train_m = stripe_features(60, k, 0)
    val_f, val_m = stripe_features(20, k, 1)
    train_m[:, :2] = 255
    kw = dict(seed=3, epochs=6, lr=0.05, batch_size=16, train_resolution=16, channels=16)
    state = torch.random.get_rng_state()
    a = train_fcn_probe(train_f * 30 + 2, train_m, k, **kw)
    assert torch.equal(state, torch.random.get_rng_state())
    b = train_fcn_probe(train_f * 30 + 2, train_m, k, **kw)
    x = val_f[:2] * 30 + 2
    assert torch.equal(a(x), b(x))
    r = evaluate_probe(a, val_f * 30 + 2, val_m, k)
    assert r["miou"] > 0.95
    head = FCNHead(5, 4, channels=8)
    assert head(torch.randn(2, 5, 6, 6)).shape == (2, 4, 6, 6)


def test_leopart_preset_and_fcn_run_on_tiny_backbone() -> None:
    rng = np.random.default_rng(0)
    samples = [
        (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 3, (32, 32)).astype(np.uint8))
    ]
    samples = samples * 6
    s = resolve_preset("leopart", image_size=32, train_resolution=16, epochs=2, batch_size=4)
    for head in ("linear", "fcn"):
        r = run_probe(
            helpers.TinyBackbone(),
            samples,
            samples[:2],
            3,
            head=head,
            image_size=s["image_size"],
            seeds=s["seeds"],
            epochs=s["epochs"],
            lr=s["lr"],
            batch_size=s["batch_size"],
            train_resolution=s["train_resolution"],
            standardize=s["standardize"],
            fcn_channels=8,
        )
        assert r["head"] == head and r["seeds"] == [400] and r["feature_shape"] == [8, 16, 16]
        assert 0.0 <= r["miou"] <= 1.0 and r["image_size"] == 32 and r["train_resolution"] == 16

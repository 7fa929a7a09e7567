"""The frozen-feature extraction on a ViT: input sizes fitted to the patch grid, patch tokens
without the class token as the dense map, and their mean as the pooled vector."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densessl.augment import normalize
from densessl.eval.features import extract, patch_aligned, patch_size_of, resize_images
from densessl.models.backbones import ResNetBackbone
from densessl.models.vit import ViTBackbone


@pytest.fixture(scope="module")
def vit() -> ViTBackbone:
    torch.manual_seed(0)
    return ViTBackbone("vit_tiny", patch_size=8, img_size=32, num_heads=3, depth=2).eval()


def samples(n: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (n, size, size), dtype=np.uint8)
    return list(zip(images, masks, strict=True))


def test_patch_aligned_rounds_each_side_to_the_nearest_multiple():
    assert patch_aligned(37, 8) == (40, 40)
    assert patch_aligned((30, 50), 16) == (32, 48)
    assert patch_aligned(3, 8) == (8, 8)  # never less than one patch
    assert patch_aligned((30, 50), None) == (30, 50)


def test_patch_size_is_found_in_a_vit_or_a_wrapper_and_not_in_a_resnet(vit):
    assert patch_size_of(vit) == 8
    assert patch_size_of(torch.nn.Sequential(vit)) == 8
    assert patch_size_of(ResNetBackbone("resnet18", width=0.125)) is None


def test_a_vit_input_off_the_patch_grid_is_resized_to_it_and_the_masks_keep_their_size(vit, caplog):
    data = samples(3, 36)
    with caplog.at_level(logging.INFO, logger="densessl.eval.features"):
        features = extract(vit, data, 36, batch_size=2, pooled_grid=1)
    assert "not a multiple of the ViT's patch size 8" in caplog.text
    # 36 px is 4.5 patches: the images go in at the nearest multiple, 32 px
    assert features.dense.shape == (3, 192, 4, 4) and features.masks.shape == (3, 36, 36)
    assert torch.equal(features.masks, torch.from_numpy(np.stack([m for _, m in data])))
    x = normalize(resize_images([image for image, _ in data], 32))
    with torch.no_grad():
        tokens = vit.tokens(x)
    patch_map = tokens[:, 1:].transpose(1, 2).reshape(3, 192, 4, 4)
    torch.testing.assert_close(features.dense, patch_map)
    # the pooled vector is the mean of the patch tokens, not the class token
    torch.testing.assert_close(features.pooled, tokens[:, 1:].mean(dim=1))
    assert not torch.allclose(features.pooled, tokens[:, 0], atol=1e-3)


def test_a_non_square_input_fits_each_side(vit):
    features = extract(vit, [np.zeros((30, 52, 3), np.uint8)], (30, 52))
    assert features.dense.shape[-2:] == (4, 6)
    assert torch.isfinite(features.dense).all()
    assert F.adaptive_avg_pool2d(features.dense, 1).shape == (1, 192, 1, 1)


def test_the_cache_tells_apart_vits_that_differ_only_in_their_heads(vit, tmp_path):
    # the same tensors read with 3 or 6 heads: same weights, other features
    six = ViTBackbone("vit_tiny", patch_size=8, img_size=32, num_heads=6, depth=2).eval()
    six.load_state_dict(vit.state_dict())
    data = samples(2, 32)
    first = extract(vit, data, 32, cache_dir=tmp_path)
    second = extract(six, data, 32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert not torch.allclose(first.dense, second.dense)
    torch.testing.assert_close(extract(six, data, 32, cache_dir=tmp_path).dense, second.dense)

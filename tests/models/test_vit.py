"""The ViT backbone: MGC's architecture details, fused attention, the depth override."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from densessl.models.backbones import build_backbone


def test_attention_runs_through_the_fused_kernel(monkeypatch):
    calls = []
    fused = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    vit = build_backbone("vit_tiny", patch_size=8, img_size=32, num_heads=4, depth=3)
    vit(torch.randn(2, 3, 32, 32))
    # one call per block, on (batch, heads, 1 + tokens, head dim)
    assert calls == [torch.Size([2, 4, 17, 48])] * 3


def test_mgc_vit_s16_details():
    vit = build_backbone("vit_small", patch_size=16, img_size=224, num_heads=8)
    assert (len(vit.blocks), vit.num_heads, vit.out_channels) == (12, 8, 384)
    assert vit.blocks[0].norm1.eps == 1e-6 and vit.blocks[0].attn.qkv.bias is not None
    # fixed 2-D sin-cos positions, zero for the class token, in the state dict but not trained
    assert not vit.pos_embed.requires_grad and "pos_embed" in vit.state_dict()
    table = vit.pos_embed[0]
    assert torch.equal(table[0], torch.zeros(384))
    # the first patch (0, 0): sin(0) = 0 and cos(0) = 1 in each half of the table
    assert set(table[1].tolist()) == {0.0, 1.0}
    # every row of a sin-cos table has norm sqrt(width / 2)
    assert torch.allclose(table[1:].norm(dim=1), torch.full((196,), math.sqrt(192)), atol=1e-4)


def test_depth_override_and_dense_map():
    vit = build_backbone("vit_tiny", patch_size=8, img_size=48, num_heads=4, depth=2)
    assert len(vit.blocks) == 2
    dense, cls = vit.forward_pooled(torch.randn(1, 3, 48, 48))
    assert dense.shape == (1, 192, 6, 6) and cls.shape == (1, 192)
    # another input size interpolates the table: 64 px -> 8x8 map
    assert vit(torch.randn(1, 3, 64, 64)).shape == (1, 192, 8, 8)

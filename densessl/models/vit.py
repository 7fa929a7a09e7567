"""Vision Transformer backbones that return the patch-token map, with timm parameter names.

A ViT backbone *is* timm's ``VisionTransformer`` without a classifier, so its ``state_dict``
holds exactly the bare timm names (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``) that timm and the MGC
transfer backbones load. Following MoCo v3 and MGC, the position embedding is a fixed 2-D
sin-cos table (not trained; the class token's entry is zero). Inputs of any size that is a
multiple of the patch size are accepted; the table is interpolated for other grids.
"""

from __future__ import annotations

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer

#: name -> (embedding width, depth, timm's default number of heads)
VIT_ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
}


class ViTBackbone(VisionTransformer):
    """timm ViT returning the final-normed patch tokens as a (B, C, H/p, W/p) map."""

    def __init__(
        self,
        arch: str = "vit_small",
        *,
        patch_size: int = 16,
        img_size: int = 224,
        num_heads: int | None = None,
        depth: int | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        if arch not in VIT_ARCHITECTURES:
            raise ValueError(f"unknown ViT '{arch}'; choose one of {sorted(VIT_ARCHITECTURES)}")
        width, default_depth, default_heads = VIT_ARCHITECTURES[arch]
        heads = num_heads or default_heads
        if width % heads:
            raise ValueError(f"{arch}: width {width} is not divisible by {heads} heads")
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=width,
            depth=depth or default_depth,
            num_heads=heads,
            qkv_bias=True,
            class_token=True,
            num_classes=0,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
        )
        grid = self.patch_embed.grid_size
        table = build_sincos2d_pos_embed(list(grid), width)
        with torch.no_grad():
            self.pos_embed.zero_()
            self.pos_embed[0, 1:] = table
        self.pos_embed.requires_grad_(False)
        self.arch = arch
        self.patch_size = patch_size
        self.num_heads = heads
        self.out_channels = width

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: (B, 1 + H/p * W/p, C), class token first."""
        return self.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The patch tokens as a dense map (B, C, H/p, W/p)."""
        return self.forward_pooled(x)[0]

    def forward_pooled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense patch map and the class token (B, C)."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.tokens(x)
        dense = tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return dense, tokens[:, 0]

"""MGC, multi-grained contrast (Shen et al., 2024): corresponding locations of two views at three
granularities, contrasted against every other location of the global batch.

An online ViT (with stochastic depth) and its momentum copy (without) each see both crops. The
patch-token map is read at several granularities, each a grouping of patch tokens: the patches
themselves, 2x2-token region means and 7x7-token region means at ViT-S/16, 224 px. For each
granularity the data loader has already chosen up to M pairs of cells that show the same source
pixels in view 1 and view 2, ranked by their Dice-like overlap
(:func:`densessl.views.geometry.mgc_correspondences`, run in the loader workers through
:meth:`MGC.view_targets`). The chosen online vectors go through the granularity's projector and
predictor, the momentum vectors through its momentum projector, and

    L_g = CE(p1 . z2^T / T, own pair) + CE(p2 . z1^T / T, own pair)

over the gathered targets of all processes (every other pair of the global batch is a negative,
T = 0.1). The total is the cap-weighted mean ``sum_g w_g L_g / sum_g w_g`` (10, 10, 2).

As in the released code, the overlap weights only decide which pairs survive the top-M cut; the
per-pair loss is the plain mean over all M rows, padded (0, 0) pairs included
(``pair_loss: released``). ``pair_loss: weighted`` weights each pair by its overlap instead, as
the paper describes (padding then counts for nothing); under DDP each process normalises by its
own weight sum.

The reference re-draws every Linear layer of the model after copying the momentum networks, so
the branches start from different Linear weights; ``reinit_linear: false`` starts them equal.

Export: the **online** ViT (``base_encoder``) by default. MGC's code derives from MoCo v3, whose
conversion script keeps ``base_encoder``, and the online network is the one trained by gradient;
``--encoder teacher`` exports the momentum ViT.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densessl.distributed import all_gather, rank
from densessl.errors import ConfigError
from densessl.methods.base import BackboneFactory, Method, Step, ViewRole, Views, ViewTargets, register
from densessl.methods.configs import MGCConfig, MGCGrouping
from densessl.models.heads import build_mlp, trunc_normal_init
from densessl.models.momentum import MomentumSchedule, ema_update, momentum_copy
from densessl.views.geometry import ViewRecord, mgc_correspondences


def pool_tokens(tokens: torch.Tensor, group: int) -> torch.Tensor:
    """(B, C, H, W) patch-token map -> (B, H/g * W/g, C): the mean of each g x g block of
    tokens, row-major (index = row * W/g + column)."""
    pooled = F.avg_pool2d(tokens, group) if group > 1 else tokens
    return pooled.flatten(2).transpose(1, 2)


def select_cells(tokens: torch.Tensor, group: int, index: torch.Tensor) -> torch.Tensor:
    """The (B * M, C) vectors of the cells ``index`` (B, M) of each sample at granularity ``group``."""
    cells = pool_tokens(tokens, group)
    picked = cells.gather(1, index.unsqueeze(-1).expand(-1, -1, cells.shape[-1]))
    return picked.flatten(0, 1)


def pair_infonce(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of each local prediction (N, D) against its own target among the targets of every
    process (its positive is row ``rank * N + i`` of the gathered (world * N, D) targets).

    ``weights`` (N,) None: the plain mean over rows; otherwise ``sum(w * ce) / sum(w)``.
    """
    queries = F.normalize(predictions.float(), dim=1)
    keys = all_gather(F.normalize(targets.detach().float(), dim=1))
    logits = queries @ keys.t() / temperature
    n = queries.shape[0]
    positives = torch.arange(n, device=queries.device) + rank() * n
    if weights is None:
        return F.cross_entropy(logits, positives)
    per_pair = F.cross_entropy(logits, positives, reduction="none")
    weights = weights.to(per_pair.dtype)
    return (per_pair * weights).sum() / weights.sum().clamp_min(torch.finfo(per_pair.dtype).tiny)


def cells_in_pixels(grouping: MGCGrouping, patch_size: int) -> dict[str, Any]:
    """Keyword arguments of :func:`mgc_correspondences` for ``grouping`` on ``patch_size`` patches."""
    return {
        "cell": grouping.tokens * patch_size,
        "cap": grouping.cap,
        "stride_ratios": tuple(grouping.stride_ratios),
        "row_clamp": tuple(grouping.row_clamp),
        "col_clamp": tuple(grouping.col_clamp),
    }


def correspondence_targets(
    records: list[ViewRecord],
    image_size: tuple[int, int],
    crop_size: int,
    cells: dict[str, dict[str, Any]],
) -> dict[str, torch.Tensor]:
    """Per-sample targets: for each granularity, the view-1 and view-2 cell indices of its pairs
    and their overlap weights (``<name>.index1``, ``<name>.index2``, ``<name>.weight``)."""
    out = {}
    for name, kwargs in cells.items():
        index1, index2, weight = mgc_correspondences(records[0], records[1], crop_size, **kwargs)
        out[f"{name}.index1"] = index1
        out[f"{name}.index2"] = index2
        out[f"{name}.weight"] = weight.float()
    return out


@register
class MGC(Method):
    name = "mgc"
    config_class = MGCConfig
    encoders = {"query": "base_encoder", "teacher": "momentum_encoder"}
    exported_role = "query"
    # view 2 is redrawn until IoU(view 1, view 2) > 0.2 (spec 5.4)
    view_roles = (ViewRole("view1"), ViewRole("view2", reference="view1", rule="iou"))

    def __init__(self, config: MGCConfig, backbone_factory: BackboneFactory) -> None:
        super().__init__()
        self.config = config
        self.base_encoder = backbone_factory()
        # the momentum ViT has no stochastic depth; otherwise it holds the online weights
        self.momentum_encoder = momentum_copy(
            self.base_encoder, build=partial(backbone_factory, drop_path_rate=0.0)
        )
        width = self.base_encoder.out_channels
        self.projectors = nn.ModuleDict()
        self.predictors = nn.ModuleDict()
        for g in config.groupings:
            self.projectors[g.name] = build_mlp(
                [width, config.hidden_dim, config.hidden_dim, config.dim],
                norm=True,
                bias=False,
                last_norm="bn_noaffine",
            )
            self.predictors[g.name] = build_mlp(
                [config.dim, config.hidden_dim, config.dim], norm=True, bias=False, last_norm="bn_noaffine"
            )
        self.momentum_projectors = nn.ModuleDict(
            {name: momentum_copy(projector) for name, projector in self.projectors.items()}
        )
        if config.reinit_linear:
            trunc_normal_init(self)

    def _online(self) -> list[nn.Module]:
        return [self.base_encoder, self.projectors]

    def _momentum(self) -> list[nn.Module]:
        return [self.momentum_encoder, self.momentum_projectors]

    def teacher_momentum(self) -> MomentumSchedule:
        return MomentumSchedule("cosine", self.config.teacher_momentum)

    @classmethod
    def view_targets(cls, config: Any) -> ViewTargets:
        """Correspondences of every granularity, from the two crops' view records."""
        sizes = {v.crop.size for v in config.views[:2]}
        if len(sizes) != 1:
            raise ConfigError(f"views: MGC's two crops must have one size, got {sorted(sizes)}")
        (crop_size,) = sizes
        patch = config.model.patch_size
        if not config.model.arch.startswith("vit"):
            raise ConfigError(
                f"model.arch: MGC runs on a ViT (vit_tiny, vit_small, vit_base), got {config.model.arch}"
            )
        if crop_size % patch:
            raise ConfigError(f"views.0.crop.size {crop_size} is not a multiple of model.patch_size {patch}")
        grid = crop_size // patch
        for i, g in enumerate(config.method.groupings):
            if grid % g.tokens:
                raise ConfigError(
                    f"method.groupings.{i} ({g.name}): a {grid}x{grid} token grid ({crop_size} px / "
                    f"patch {patch}) cannot be split into {g.tokens}x{g.tokens}-token cells"
                )
        cells = {g.name: cells_in_pixels(g, patch) for g in config.method.groupings}
        return partial(correspondence_targets, crop_size=crop_size, cells=cells)

    def forward(self, views: Views, step: Step) -> dict[str, torch.Tensor]:
        cfg = self.config
        x1, x2 = views.images[0], views.images[1]
        online1, online2 = self.base_encoder(x1), self.base_encoder(x2)
        with torch.no_grad():
            m = self.momentum_for(step)
            for teacher, student in zip(self._momentum(), self._online(), strict=True):
                ema_update(teacher, student, m)
            momentum1, momentum2 = self.momentum_encoder(x1), self.momentum_encoder(x2)

        outputs: dict[str, torch.Tensor] = {}
        total = online1.new_zeros((), dtype=torch.float32)
        for g in cfg.groupings:
            index1, index2 = views.targets[f"{g.name}.index1"], views.targets[f"{g.name}.index2"]
            weights = views.targets[f"{g.name}.weight"].flatten()
            projector, predictor = self.projectors[g.name], self.predictors[g.name]
            # each view's cells pass the heads as one batch (BN statistics per view, as in the reference)
            p1 = predictor(projector(select_cells(online1, g.tokens, index1)))
            p2 = predictor(projector(select_cells(online2, g.tokens, index2)))
            with torch.no_grad():
                momentum_projector = self.momentum_projectors[g.name]
                z1 = momentum_projector(select_cells(momentum1, g.tokens, index1))
                z2 = momentum_projector(select_cells(momentum2, g.tokens, index2))
            pair_weights = weights if cfg.pair_loss == "weighted" else None
            loss_g = pair_infonce(p1, z2, cfg.temperature, pair_weights) + pair_infonce(
                p2, z1, cfg.temperature, pair_weights
            )
            total = total + g.weight * loss_g
            outputs[f"loss_{g.name}"] = loss_g.detach()
            outputs[f"padded_{g.name}"] = (weights == 0).float().mean()
        outputs["loss"] = total / sum(g.weight for g in cfg.groupings)
        outputs["momentum"] = torch.tensor(m)
        return outputs


__all__ = ["MGC", "cells_in_pixels", "correspondence_targets", "pair_infonce", "pool_tokens", "select_cells"]

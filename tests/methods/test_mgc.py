"""MGC: token groupings, the pair InfoNCE against its formula, the two branches, the view
targets, and the same loss in two gloo processes with synchronised head batch norm."""

from __future__ import annotations

import math
import pickle
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from densessl.config import ExperimentConfig, ModelConfig, ViewConfig, load_config
from densessl.errors import ConfigError
from densessl.methods import Step, Views
from densessl.methods.configs import MGCConfig, MGCGrouping
from densessl.methods.mgc import MGC, pair_infonce, pool_tokens, select_cells
from densessl.models.backbones import build_backbone
from densessl.models.momentum import ema_update
from densessl.views.geometry import Box, ViewRecord, mgc_correspondences
from densessl.views.spec import CropSpec
from tests.helpers import SMALL_RUN, run_in_gloo_processes, sgd_losses

QUICK_MGC = Path(__file__).resolve().parents[2] / "densessl/recipes/quick/mgc_synthetic.yaml"

#: a 4x4 token grid (16 px crops, 4 px patches) read at two granularities
GROUPINGS = [
    MGCGrouping("patch", 1, 5, 10.0, (12, 8), (1, 4), (1, 4)),
    MGCGrouping("region", 2, 3, 2.0, (1, 1), (1, 1), (1, 1)),
]


def tiny_vit_factory(drop_path_rate: float = 0.0, depth: int = 1):
    def factory(**overrides):
        torch.manual_seed(0)
        kwargs = {"arch": "vit_tiny", "patch_size": 4, "img_size": 16, "num_heads": 2, "depth": depth}
        return build_backbone(**{**kwargs, "drop_path_rate": drop_path_rate, **overrides})

    return factory


def tiny_mgc(drop_path_rate: float = 0.0, **changes) -> MGC:
    """A one-block ViT on 4 px patches; no drop path unless asked (it draws from the global RNG)."""
    config = MGCConfig(dim=8, hidden_dim=16, groupings=GROUPINGS, **changes)
    return MGC(config, tiny_vit_factory(drop_path_rate=drop_path_rate))


def mgc_views(batch: int, seed: int = 0) -> Views:
    """Two random 16 px views with random (but valid) pair indices for every grouping."""
    g = torch.Generator().manual_seed(seed)
    targets = {}
    for grouping in GROUPINGS:
        cells = (4 // grouping.tokens) ** 2
        targets[f"{grouping.name}.index1"] = torch.randint(0, cells, (batch, grouping.cap), generator=g)
        targets[f"{grouping.name}.index2"] = torch.randint(0, cells, (batch, grouping.cap), generator=g)
        targets[f"{grouping.name}.weight"] = torch.rand(batch, grouping.cap, generator=g) * 0.5
    return Views(
        images=[torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)],
        boxes=torch.zeros(batch, 2, 4, dtype=torch.long),
        flips=torch.zeros(batch, 2, dtype=torch.bool),
        image_sizes=torch.full((batch, 2), 16),
        targets=targets,
    )


def step_at(step: int) -> Step:
    return Step(step=step, total_steps=10, epoch=0, generator=torch.Generator().manual_seed(step))


# ---------------------------------------------------------------------------------------------
# token groupings


def test_pool_tokens_averages_blocks_row_major():
    tokens = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    cells = pool_tokens(tokens, 2)
    assert cells.shape == (2, 4, 3)
    for row in range(2):
        for col in range(2):
            block = tokens[:, :, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2].mean(dim=(2, 3))
            torch.testing.assert_close(cells[:, row * 2 + col], block)
    # one token per cell: the map itself, index = row * width + column
    torch.testing.assert_close(pool_tokens(tokens, 1)[:, 1 * 4 + 3], tokens[:, :, 1, 3])


def test_select_cells_takes_each_samples_own_cells_in_pair_order():
    tokens = torch.randn(2, 3, 4, 4)
    index = torch.tensor([[5, 0, 5], [15, 1, 2]])
    picked = select_cells(tokens, 1, index)
    assert picked.shape == (6, 3)
    torch.testing.assert_close(picked[0], tokens[0, :, 1, 1])
    torch.testing.assert_close(picked[3], tokens[1, :, 3, 3])
    torch.testing.assert_close(picked[5], tokens[1, :, 0, 2])


# ---------------------------------------------------------------------------------------------
# the loss


def pair_loss_by_hand(p: torch.Tensor, z: torch.Tensor, t: float, weights=None) -> float:
    """-log softmax of each prediction's own target among all targets, one row at a time."""
    losses = []
    for i in range(p.shape[0]):
        q = F.normalize(p[i], dim=0)
        logits = [float(q @ F.normalize(z[j], dim=0)) / t for j in range(z.shape[0])]
        log_sum = math.log(sum(math.exp(v) for v in logits))
        losses.append(log_sum - logits[i])
    if weights is None:
        return sum(losses) / len(losses)
    w = weights.tolist()
    return sum(a * b for a, b in zip(losses, w, strict=True)) / sum(w)


def test_pair_infonce_equals_its_formula_in_both_modes():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    weights = torch.tensor([0.5, 0.1, 0.0, 0.3, 0.2, 0.05])
    assert float(pair_infonce(p, z, 0.1)) == pytest.approx(pair_loss_by_hand(p, z, 0.1), rel=1e-5)
    weighted = float(pair_infonce(p, z, 0.1, weights))
    assert weighted == pytest.approx(pair_loss_by_hand(p, z, 0.1, weights), rel=1e-5)
    assert weighted != pytest.approx(float(pair_infonce(p, z, 0.1)), rel=1e-3)


def test_released_loss_ignores_the_overlap_weights_and_weighted_loss_does_not():
    views = mgc_views(4)
    released = tiny_mgc()
    out = released(views, step_at(0))["loss"]
    reweighted = mgc_views(4)
    for key in [k for k in reweighted.targets if k.endswith(".weight")]:
        reweighted.targets[key] = torch.rand_like(reweighted.targets[key])
    assert torch.equal(tiny_mgc()(reweighted, step_at(0))["loss"], out)
    weighted = tiny_mgc(pair_loss="weighted")
    assert not torch.allclose(weighted(views, step_at(0))["loss"], out)


def test_total_is_the_weighted_mean_of_symmetric_granularity_losses():
    model = tiny_mgc()
    views = mgc_views(4)
    out = model(views, step_at(0))
    expected = (10 * out["loss_patch"] + 2 * out["loss_region"]) / 12
    torch.testing.assert_close(out["loss"].detach(), expected)
    # recompute the patch term from a fresh copy's heads: both directions, targets from the
    # momentum branch after its update
    fresh = tiny_mgc()
    online = [fresh.base_encoder(x) for x in views.images]
    m = fresh.momentum_for(step_at(0))
    with torch.no_grad():
        ema_update(fresh.momentum_encoder, fresh.base_encoder, m)
        ema_update(fresh.momentum_projectors, fresh.projectors, m)
        momentum = [fresh.momentum_encoder(x) for x in views.images]
    i1, i2 = views.targets["patch.index1"], views.targets["patch.index2"]
    proj, pred, mproj = (
        fresh.projectors["patch"],
        fresh.predictors["patch"],
        fresh.momentum_projectors["patch"],
    )
    p1 = pred(proj(select_cells(online[0], 1, i1)))
    p2 = pred(proj(select_cells(online[1], 1, i2)))
    with torch.no_grad():
        z1 = mproj(select_cells(momentum[0], 1, i1))
        z2 = mproj(select_cells(momentum[1], 1, i2))
    by_hand = pair_loss_by_hand(p1.detach(), z2, 0.1) + pair_loss_by_hand(p2.detach(), z1, 0.1)
    assert float(out["loss_patch"]) == pytest.approx(by_hand, rel=1e-4)


def test_gradients_reach_the_online_branch_only():
    model = tiny_mgc()
    model(mgc_views(4), step_at(0))["loss"].backward()
    assert model.base_encoder.patch_embed.proj.weight.grad is not None
    assert all(p.grad is not None for p in model.predictors.parameters())
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    assert all(not p.requires_grad for p in model.momentum_projectors.parameters())


# ---------------------------------------------------------------------------------------------
# the two branches


def test_heads_follow_the_reference_layout():
    model = tiny_mgc()
    projector = [type(m).__name__ for m in model.projectors["patch"]]
    assert projector == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
    ]
    predictor = [type(m).__name__ for m in model.predictors["patch"]]
    assert predictor == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    for head in (model.projectors["patch"], model.predictors["patch"]):
        assert all(m.bias is None for m in head if isinstance(m, torch.nn.Linear))
        assert not head[-1].affine


def test_drop_path_only_in_the_online_encoder():
    model = MGC(MGCConfig(dim=8, hidden_dim=16, groupings=GROUPINGS), tiny_vit_factory(0.1, depth=3))
    online = [type(b.drop_path1).__name__ for b in model.base_encoder.blocks]
    momentum = [type(b.drop_path1).__name__ for b in model.momentum_encoder.blocks]
    # rising linearly from 0 at the first block to the rate at the last
    assert online == ["Identity", "DropPath", "DropPath"] and momentum == ["Identity"] * 3
    assert [b.drop_path1.drop_prob for b in model.base_encoder.blocks[1:]] == pytest.approx([0.05, 0.1])


@pytest.mark.parametrize("reinit", [True, False])
def test_linear_layers_are_redrawn_after_the_copy_unless_told_not_to(reinit):
    model = tiny_mgc(reinit_linear=reinit)
    online, momentum = model.base_encoder.state_dict(), model.momentum_encoder.state_dict()
    linear = "blocks.0.attn.qkv.weight"
    assert torch.equal(online[linear], momentum[linear]) is not reinit
    projector = model.projectors["patch"][0].weight
    assert torch.equal(projector, model.momentum_projectors["patch"][0].weight) is not reinit
    # what is not a Linear layer starts equal either way
    for name in ("patch_embed.proj.weight", "cls_token", "pos_embed", "norm.weight"):
        assert torch.equal(online[name], momentum[name]), name


def test_momentum_follows_the_cosine_schedule_and_updates_both_teacher_parts():
    model = tiny_mgc()
    before = model.momentum_projectors["patch"][0].weight.clone()
    out = model(mgc_views(4), Step(step=0, total_steps=10, epoch=0, generator=torch.Generator()))
    assert float(out["momentum"]) == pytest.approx(0.996)
    m = 0.996
    expected = m * before + (1 - m) * model.projectors["patch"][0].weight
    torch.testing.assert_close(model.momentum_projectors["patch"][0].weight, expected)
    out = model(mgc_views(4), Step(step=5, total_steps=10, epoch=0, generator=torch.Generator()))
    assert float(out["momentum"]) == pytest.approx(1 - 0.004 * 0.5)


# ---------------------------------------------------------------------------------------------
# view targets


def mgc_experiment(crop: int = 16, patch: int = 4, groupings=GROUPINGS) -> ExperimentConfig:
    return ExperimentConfig(
        method=MGCConfig(groupings=groupings),
        model=ModelConfig(arch="vit_tiny", patch_size=patch, img_size=crop),
        views=[
            ViewConfig(crop=CropSpec(crop)),
            ViewConfig(crop=CropSpec(crop, reference=0, rule="iou", threshold=0.2, tries=None)),
        ],
    )


def test_view_targets_are_the_geometry_correspondences_of_each_grouping():
    targets = MGC.view_targets(mgc_experiment())
    targets = pickle.loads(pickle.dumps(targets))  # they run in loader workers
    a = ViewRecord(Box(3, 5, 40, 30), False, (16, 16))
    b = ViewRecord(Box(10, 2, 35, 45), True, (16, 16), reference=0)
    out = targets([a, b], (60, 60))
    assert set(out) == {f"{g}.{k}" for g in ("patch", "region") for k in ("index1", "index2", "weight")}
    for grouping in GROUPINGS:
        cell = grouping.tokens * 4
        i1, i2, w = mgc_correspondences(
            a, b, 16, cell, grouping.cap, grouping.stride_ratios, grouping.row_clamp, grouping.col_clamp
        )
        assert torch.equal(out[f"{grouping.name}.index1"], i1)
        assert torch.equal(out[f"{grouping.name}.index2"], i2)
        torch.testing.assert_close(out[f"{grouping.name}.weight"], w.float())
        assert int(i1.max()) < (4 // grouping.tokens) ** 2


def test_the_default_groupings_are_the_references_cells_at_vit_s16_224():
    from densessl.views.geometry import MGC_GRANULARITIES

    config = MGCConfig()
    cells = [g.tokens * 16 for g in config.groupings]
    reference = list(MGC_GRANULARITIES.values())
    assert cells == [r.cell for r in reference] == [16, 32, 112]
    assert [g.cap for g in config.groupings] == [r.cap for r in reference] == [10, 10, 2]
    assert [tuple(g.stride_ratios) for g in config.groupings] == [r.stride_ratios for r in reference]
    assert [g.weight for g in config.groupings] == [10.0, 10.0, 2.0]


@pytest.mark.parametrize(
    "experiment,message",
    [
        (partial(mgc_experiment, crop=18, patch=4), "not a multiple of model.patch_size 4"),
        (
            partial(mgc_experiment, crop=24, patch=4),
            "a 6x6 token grid (24 px / patch 4) cannot be split into 4x4",
        ),
    ],
)
def test_a_recipe_whose_grid_does_not_fit_the_groupings_is_one_line(experiment, message):
    groupings = [*GROUPINGS, MGCGrouping("big", 4, 1, 1.0, (1, 1), (1, 1), (1, 1))]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MGC.view_targets(experiment(groupings=groupings))


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.groupings.0.tokens=0", "tokens and cap must be at least 1"),
        ("method.pair_loss=weighed", "did you mean 'weighted'"),
    ],
)
def test_bad_mgc_settings_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(QUICK_MGC, [override])


# ---------------------------------------------------------------------------------------------
# two processes


def _mgc_inputs(rank: int = 0, world: int = 1) -> list[tuple[Views, Step]]:
    """Two steps of this process's share of a 4-image batch."""
    inputs = []
    for step in range(2):
        views = mgc_views(4, seed=step)
        views.images = [x.chunk(world)[rank] for x in views.images]
        views.targets = {k: v.chunk(world)[rank] for k, v in views.targets.items()}
        inputs.append((views, step_at(step)))
    return inputs


def _worker(rank: int, world: int) -> list[float]:
    from densessl.distributed import convert_sync_batchnorm

    model = convert_sync_batchnorm(tiny_mgc(), torch.device("cpu"))
    return sgd_losses(torch.nn.parallel.DistributedDataParallel(model), _mgc_inputs(rank, world), lr=0.1)


def test_two_gloo_processes_with_synchronised_heads_match_one_process():
    results = run_in_gloo_processes(_worker)
    single = sgd_losses(tiny_mgc(), _mgc_inputs(), lr=0.1)
    for rank in (0, 1):
        assert results[rank] == pytest.approx(single, rel=1e-4), (results, single)


# ---------------------------------------------------------------------------------------------
# through the trainer

#: the quick recipe shrunk to a second per run: one block, narrow heads, 8 images a step
MGC_TINY = [*SMALL_RUN, "data.synthetic_length=32", "model.depth=1", "method.hidden_dim=16"]


def logged(run_dir: Path) -> dict[int, dict]:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


def test_a_resumed_run_continues_the_same_momentum_and_losses(tmp_path):
    from densessl.training.trainer import Trainer

    Trainer(load_config(QUICK_MGC, [*MGC_TINY, "train.max_steps=6"]), tmp_path / "full").fit()
    Trainer(load_config(QUICK_MGC, [*MGC_TINY, "train.max_steps=3"]), tmp_path / "cut").fit()
    Trainer(load_config(QUICK_MGC, [*MGC_TINY, "train.max_steps=6"]), tmp_path / "cut", resume="auto").fit()
    full, cut = logged(tmp_path / "full"), logged(tmp_path / "cut")
    assert sorted(cut) == list(range(1, 7))
    momenta = [full[s]["momentum"] for s in range(1, 7)]
    assert momenta == sorted(momenta) and momenta[0] == pytest.approx(0.99)  # cosine, rising
    for step in range(4, 7):
        for key in ("loss", "loss_patch", "loss_region16", "loss_region24", "momentum"):
            assert cut[step][key] == pytest.approx(full[step][key], abs=1e-6), (step, key)


@pytest.mark.parametrize(
    "name",
    [
        "mgc/coco_vits16_800ep",
        "mgc/voc_vits16_800ep",
        "mgc/ade20k_vits16_800ep",
        "mgc/imagenet_vits16_200ep",
        "quick/mgc_synthetic",
    ],
)
def test_every_mgc_recipe_plays_the_views_and_builds_its_targets(name):
    config = load_config(name)
    MGC.check_views([v.crop for v in config.views])
    targets = MGC.view_targets(config)
    size = config.views[0].crop.size
    a = ViewRecord(Box(0, 0, 300, 200), False, (size, size))
    b = ViewRecord(Box(60, 20, 240, 180), True, (size, size), reference=0)
    out = targets([a, b], (200, 300))
    caps = {g.name: g.cap for g in config.method.groupings}
    assert {k: v.shape[0] for k, v in out.items()} == {
        f"{g}.{kind}": cap for g, cap in caps.items() for kind in ("index1", "index2", "weight")
    }
    assert all(float(out[f"{g}.weight"][0]) > 0 for g in caps)


def test_the_full_recipes_state_the_references_values():
    coco, imagenet = load_config("mgc/coco_vits16_800ep"), load_config("mgc/imagenet_vits16_200ep")
    assert (coco.model.arch, coco.model.patch_size, coco.model.num_heads) == ("vit_small", 16, 8)
    assert (coco.train.batch_size, coco.optim.lr, coco.optim.warmup_epochs) == (256, 1e-3, 10)
    assert (coco.model.drop_path_rate, imagenet.model.drop_path_rate) == (0.05, 0.1)
    assert (imagenet.train.batch_size, imagenet.optim.lr, imagenet.optim.warmup_epochs) == (512, 2e-3, 30)
    assert (coco.optim.clip_grad, coco.optim.clip_mode, coco.optim.weight_decay) == (
        3.0,
        "per_parameter",
        0.05,
    )
    assert coco.method.groupings == MGCConfig().groupings
    assert load_config("mgc/voc_vits16_800ep").data.source.startswith("folder:")


@pytest.mark.parametrize("role,module", [("query", "base_encoder"), ("teacher", "momentum_encoder")])
def test_an_mgc_checkpoint_exports_either_vit_with_timms_bare_keys(tmp_path, role, module):
    from densessl.export import export
    from densessl.training.trainer import Trainer

    config = load_config(QUICK_MGC, [*MGC_TINY, "train.max_steps=2"])
    result = Trainer(config, tmp_path / "run").fit()
    out = tmp_path / f"{role}.pth"
    export(result["checkpoint"], out, to="vit", encoder=role)
    exported = torch.load(out)
    state = torch.load(result["checkpoint"], weights_only=False)["model"]
    expected = {k[len(module) + 1 :]: v for k, v in state.items() if k.startswith(module + ".")}
    assert set(exported) == set(expected) and "cls_token" in exported and "pos_embed" in exported
    assert not any(k.startswith(("head", "fc_norm")) for k in exported)
    assert all(torch.equal(exported[k], expected[k]) for k in exported)

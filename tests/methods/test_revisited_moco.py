"""Revisited MoCo: the neighbour loss against its formula, both enqueue orders, small crops as
their own batch, both queues through resume and across two gloo processes."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densessl.config import load_config
from densessl.methods import Step, Views
from densessl.methods.configs import RevisitedMoCoConfig
from densessl.methods.revisited_moco import RevisitedMoCo, nearest_keys, neighbour_loss
from densessl.models.queue import queue_infonce
from tests.helpers import SMALL_RUN, run_in_gloo_processes, sgd_losses

QUICK = Path(__file__).resolve().parents[2] / "densessl/recipes/quick/revisited_moco_synthetic.yaml"


class PooledTiny(nn.Module):
    """A BN-free conv net with the backbone contract, including ``forward_pooled``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1)
        )
        self.out_channels = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_pooled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dense = self.body(x)
        return dense, dense.mean(dim=(2, 3))


def factory():
    torch.manual_seed(0)
    return PooledTiny()


def tiny(**changes) -> RevisitedMoCo:
    config = RevisitedMoCoConfig(
        dim=4, hidden_dim=6, queue_size=16, knn_topk=3, shuffle_bn_groups=1, **changes
    )
    return RevisitedMoCo(config, factory)


def multicrop(batch: int, seed: int = 0, small: int = 4) -> Views:
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(batch, 3, 8, 8, generator=g) for _ in range(2)]
    images += [torch.randn(batch, 3, 4, 4, generator=g) for _ in range(small)]
    accepted = torch.ones(batch, 2 + small, dtype=torch.bool)
    accepted[0, 3] = False
    return Views(
        images=images,
        boxes=torch.zeros(batch, 2 + small, 4, dtype=torch.long),
        flips=torch.zeros(batch, 2 + small, dtype=torch.bool),
        image_sizes=torch.full((batch, 2), 8),
        accepted=accepted,
        references=(None, None, *[1] * small),
    )


def step_at(step: int, epoch: int = 0) -> Step:
    return Step(step=step, total_steps=100, epoch=epoch, generator=torch.Generator().manual_seed(step))


def test_neighbour_loss_is_its_formula_and_leaves_the_key_out():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, generator=g) * 3
    neighbours = torch.tensor([[0, 2], [5, 1], [3, 3]])
    by_hand = 0.0
    for i in range(3):
        denominator = sum(math.exp(v) for v in logits[i].tolist())  # the queue only
        by_hand += -sum(math.log(math.exp(float(logits[i, j])) / denominator) for j in neighbours[i]) / 2
    assert float(neighbour_loss(logits, neighbours)) == pytest.approx(by_hand / 3, rel=1e-6)
    # a key column in the denominator would lower every probability: not what is computed
    with_key = torch.cat([torch.full((3, 1), 2.0), logits], dim=1)
    assert float(neighbour_loss(with_key, neighbours + 1)) > by_hand / 3


def test_nearest_keys_are_the_top_cosines():
    bank = F.normalize(torch.randn(10, 5, generator=torch.Generator().manual_seed(2)), dim=1)
    query = bank[[7, 2]] + 0.01
    assert nearest_keys(query, bank, 1).flatten().tolist() == [7, 2]


def query_rows(model: RevisitedMoCo, views: Views) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised projections and pooled backbone features of every query row, image-major."""
    batch, small = views.images[0].shape[0], views.images[2:]
    pooled_large, q_large = model.encoder_q.forward_pooled(views.images[0])
    pooled_small, q_small = model.encoder_q.forward_pooled(torch.stack(small, 1).flatten(0, 1))
    q = torch.cat([q_large[:, None], q_small.view(batch, len(small), -1)], 1).flatten(0, 1)
    feats = torch.cat([pooled_large[:, None], pooled_small.view(batch, len(small), -1)], 1).flatten(0, 1)
    return F.normalize(q, dim=1), F.normalize(feats, dim=1)


def by_hand(model: RevisitedMoCo, views: Views, step: Step, order: str) -> tuple[float, float]:
    """MoCo and neighbour terms recomputed from the model's parts, with the given enqueue order."""
    cfg = model.config
    batch, small = views.images[0].shape[0], views.images[2:]
    q, feats = query_rows(model, views)
    with torch.no_grad():
        from densessl.models.momentum import ema_update

        ema_update(model.encoder_k, model.encoder_q, model.momentum_for(step))
        pooled_k, k = model.encoder_k.forward_pooled(views.images[1])
    k, hk = F.normalize(k, dim=1), F.normalize(pooled_k, dim=1)
    moco = queue_infonce(q, k.repeat_interleave(1 + len(small), 0), model.queue.keys, cfg.temperature)
    logits = q @ model.queue.keys.t() / cfg.temperature
    bank = model.backbone_queue.keys.clone()
    if order == "released":  # the current key features enter their slots before the search
        start = int(model.backbone_queue.ptr)
        bank[start : start + batch] = hk
    neighbours = (feats @ bank.t()).topk(cfg.knn_topk, dim=1).indices
    return float(moco.detach()), float(neighbour_loss(logits, neighbours).detach())


@pytest.mark.parametrize("order", ["released", "consistent"])
def test_both_enqueue_orders_give_the_losses_the_spec_describes(order):
    model = tiny(enqueue_order=order)
    twin = copy.deepcopy(model)
    views = multicrop(4)
    out = model(views, step_at(0))
    moco, knn = by_hand(twin, views, step_at(0), order)
    assert float(out["loss_moco"]) == pytest.approx(moco, rel=1e-5)
    assert float(out["loss_knn"]) == pytest.approx(knn, rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(moco + 0.4 * knn, rel=1e-5)
    other = "consistent" if order == "released" else "released"
    assert float(out["loss_knn"]) != pytest.approx(by_hand(copy.deepcopy(twin), views, step_at(0), other)[1])


def test_released_order_finds_each_large_query_its_own_fresh_key():
    # with the key encoder equal to the query encoder, a large query's backbone feature is close to
    # its own key's, which the released order has just written into the bank
    model = tiny(momentum=0.0)
    views = multicrop(4)
    views.images[1] = views.images[0].clone()
    start = int(model.backbone_queue.ptr)
    pooled, _ = model.encoder_q.forward_pooled(views.images[0])
    feats = F.normalize(pooled, dim=1)
    model(views, step_at(0))
    top = nearest_keys(feats, model.backbone_queue.keys, 1).flatten()
    assert top.tolist() == list(range(start, start + 4))


def test_the_share_of_neighbours_in_just_written_slots_is_logged_in_the_released_order():
    model = tiny(momentum=0.0)
    views = multicrop(4)
    views.images[1] = views.images[0].clone()
    start = int(model.backbone_queue.ptr)
    out = model(views, step_at(0))
    batch = 4
    neighbours = nearest_keys(query_rows(model, views)[1], model.backbone_queue.keys, 3)
    fresh = (neighbours >= start) & (neighbours < start + batch)
    # each large query's own key is among them: at least 4 of the 20 x 3 neighbours
    assert int(fresh.sum()) >= 4
    assert float(out["knn_fresh_share"]) == pytest.approx(float(fresh.float().mean()))
    assert "knn_fresh_share" not in tiny(enqueue_order="consistent")(multicrop(4), step_at(0))


def test_both_queues_are_written_at_the_same_slots():
    model = tiny()
    for step in range(5):  # 5 x 4 keys wrap around the 16 slots
        model(multicrop(4, seed=step), step_at(step))
        assert int(model.queue.ptr) == int(model.backbone_queue.ptr) == (4 * (step + 1)) % 16
    assert model.backbone_queue.keys.shape == (16, 8)
    assert torch.allclose(model.backbone_queue.keys.norm(dim=1), torch.ones(16))


def test_small_crops_pass_the_query_encoder_as_one_batch_of_their_own():
    model = tiny()
    seen = []
    original = model.encoder_q.backbone.forward_pooled

    def recording(x):
        seen.append(tuple(x.shape))
        return original(x)

    model.encoder_q.backbone.forward_pooled = recording
    model(multicrop(3), step_at(0))
    assert seen == [(3, 3, 8, 8), (12, 3, 4, 4)]


def test_warmup_trains_the_moco_term_alone_and_fallbacks_are_counted():
    model = tiny(knn_warmup_epochs=2)
    out = model(multicrop(4), step_at(0, epoch=1))
    assert float(out["loss_knn"]) == 0.0
    assert float(out["loss"].detach()) == pytest.approx(float(out["loss_moco"]))
    out = model(multicrop(4), step_at(1, epoch=2))
    assert float(out["loss"].detach()) == pytest.approx(
        float(out["loss_moco"]) + 0.4 * float(out["loss_knn"])
    )
    # one small crop of 16 fell back to a free draw
    assert float(out["small_crop_fallbacks"]) == pytest.approx(1 / 16)


def test_knn_topk_larger_than_the_queue_is_one_line():
    from densessl.errors import ConfigError

    with pytest.raises(ConfigError, match="knn_topk 20 exceeds queue_size 16"):
        load_config(QUICK, ["method.queue_size=16", "method.knn_topk=20"])


# ---------------------------------------------------------------------------------------------
# through the trainer

TINY = [
    *SMALL_RUN,
    "data.synthetic_length=32",
    "method.queue_size=32",
    "method.knn_topk=4",
    "model.width=0.125",
    "train.checkpoint_every=1",
]


def test_a_resumed_run_continues_the_same_losses_with_both_queues_restored(tmp_path):
    from densessl.training.trainer import Trainer

    Trainer(load_config(QUICK, [*TINY, "train.max_steps=6"]), tmp_path / "full").fit()
    Trainer(load_config(QUICK, [*TINY, "train.max_steps=3"]), tmp_path / "cut").fit()
    Trainer(load_config(QUICK, [*TINY, "train.max_steps=6"]), tmp_path / "cut", resume="auto").fit()

    def logged(run):
        return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}

    full, cut = logged(tmp_path / "full"), logged(tmp_path / "cut")
    for step in range(4, 7):
        for key in ("loss", "loss_moco", "loss_knn"):
            assert cut[step][key] == pytest.approx(full[step][key], abs=1e-6), (step, key)
    a = torch.load(tmp_path / "full/checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=False)["model"]
    for key in ("queue.keys", "backbone_queue.keys", "backbone_queue.ptr"):
        torch.testing.assert_close(a[key], b[key])
    # epoch copies are light: no backbone queue
    epoch_copy = torch.load(tmp_path / "full/checkpoints/epoch_0001.pt", weights_only=False)["model"]
    assert "queue.keys" in epoch_copy and "backbone_queue.keys" not in epoch_copy
    # an export holds the query backbone and nothing else
    from densessl.export import export

    export(tmp_path / "full/checkpoints/last.pt", tmp_path / "backbone.pth", to="torchvision")
    exported = torch.load(tmp_path / "backbone.pth")
    config = load_config(QUICK, TINY)
    from densessl.training.trainer import build_model

    assert set(exported) == set(build_model(config).encoder_q.backbone.state_dict())


# ---------------------------------------------------------------------------------------------
# two processes


def _multicrop_inputs(rank: int = 0, world: int = 1) -> list[tuple[Views, Step]]:
    """Three steps of this process's share of a 4-image batch."""
    inputs = []
    for step in range(3):
        views = multicrop(4, seed=step)
        views.images = [x.chunk(world)[rank] for x in views.images]
        views.accepted = views.accepted.chunk(world)[rank]
        inputs.append((views, step_at(step)))
    return inputs


def _worker(rank: int, world: int) -> tuple:
    model = tiny()
    losses = sgd_losses(nn.parallel.DistributedDataParallel(model), _multicrop_inputs(rank, world), lr=0.5)
    return losses, model.queue.keys.numpy().copy(), model.backbone_queue.keys.numpy().copy()


def test_two_gloo_processes_fill_both_queues_as_one_process():
    results = run_in_gloo_processes(_worker)
    model = tiny()
    single = sgd_losses(model, _multicrop_inputs(), lr=0.5)
    for rank in (0, 1):
        losses, keys, backbone_keys = results[rank]
        assert losses == pytest.approx(single, rel=1e-5)
        torch.testing.assert_close(torch.from_numpy(keys), model.queue.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            torch.from_numpy(backbone_keys), model.backbone_queue.keys, atol=1e-5, rtol=1e-5
        )

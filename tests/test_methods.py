"""MoCo-v2 and DenseCL losses against their formulas, computed by hand on tiny cases."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from densessl.methods import Step
from densessl.methods.densecl import DenseCL, DenseCLConfig, match_locations
from densessl.methods.mocov2 import MoCoV2, MoCoV2Config
from densessl.models.queue import NegativeQueue, queue_infonce
from tests.helpers import random_views, tiny_factory


def step0() -> Step:
    return Step(step=0, total_steps=10, epoch=0, generator=torch.Generator().manual_seed(0))


def infonce_by_hand(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, t: float) -> float:
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ n) / t) for n in negatives)
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def test_queue_infonce_equals_formula():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    k = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=1)
    negatives = F.normalize(torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), dim=1)
    loss = queue_infonce(q, k, negatives, 0.2)
    assert math.isclose(float(loss), infonce_by_hand(q, k, negatives, 0.2), rel_tol=1e-5)


def test_queue_ring_buffer_wraps_and_overwrites_oldest():
    queue = NegativeQueue(dim=2, size=5)
    for value in range(1, 4):
        queue.push(torch.full((2, 2), float(value)))
    # pushes of 2 rows: [1,1] at 0-1, [2,2] at 2-3, [3,3] at 4 and wrapped to 0
    assert queue.keys[:, 0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]
    assert int(queue.ptr) == 1
    queue.push(torch.full((7, 2), 9.0))  # more rows than the queue: keep the last 5
    assert queue.keys[:, 0].tolist() == [9.0] * 5


def test_mocov2_loss_and_enqueue():
    torch.manual_seed(0)
    model = MoCoV2(MoCoV2Config(dim=4, hidden_dim=6, queue_size=16, momentum=0.9), tiny_factory())
    views = random_views(4)
    queue_before = model.queue.keys.clone()
    out = model(views, step0())
    with torch.no_grad():
        q = F.normalize(model.encoder_q(views.images[0])[1], dim=1)
        k = F.normalize(model.encoder_k(views.images[1])[1], dim=1)
    assert math.isclose(float(out["loss"].detach()), infonce_by_hand(q, k, queue_before, 0.2), rel_tol=1e-4)
    assert torch.allclose(model.queue.keys[:4], k, atol=1e-6)
    assert torch.equal(model.queue.keys[4:], queue_before[4:])
    assert int(model.queue.ptr) == 4


def test_mocov2_teacher_is_ema_of_student():
    model = MoCoV2(MoCoV2Config(dim=4, hidden_dim=6, queue_size=16, momentum=0.9), tiny_factory())
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.encoder_k.parameters()]
    model(random_views(2), step0())
    for t, t0, s in zip(model.encoder_k.parameters(), before, model.encoder_q.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * s, atol=1e-6)


def test_densecl_matches_brute_force_argmax():
    torch.manual_seed(1)
    q = torch.randn(2, 5, 3, 3)
    k = torch.randn(2, 5, 3, 3)
    matches = match_locations(q, k)
    for b in range(2):
        for s in range(9):
            qs = q[b].flatten(1)[:, s]
            sims = [float(F.cosine_similarity(qs, k[b].flatten(1)[:, t], dim=0)) for t in range(9)]
            assert int(matches[b, s]) == max(range(9), key=sims.__getitem__)


def test_densecl_loss_equals_formula():
    torch.manual_seed(0)
    cfg = DenseCLConfig(dim=4, hidden_dim=6, queue_size=16, momentum=0.9, loss_lambda=0.5)
    model = DenseCL(cfg, tiny_factory())
    views = random_views(2)
    queue = model.queue.keys.clone()
    dense_queue = model.dense_queue.keys.clone()
    out = model(views, step0())
    with torch.no_grad():
        qf, qg, qd = model.encoder_q(views.images[0])
        kf, kg, kd = model.encoder_k(views.images[1])
    qg, kg = F.normalize(qg, dim=1), F.normalize(kg, dim=1)
    global_loss = infonce_by_hand(qg, kg, queue, 0.2)
    rows, total = 0, 0.0
    for b in range(2):
        bq = F.normalize(qf[b].flatten(1), dim=0)  # backbone features decide the match
        bk = F.normalize(kf[b].flatten(1), dim=0)
        rq = F.normalize(qd[b], dim=0)  # projected features carry the loss
        rk = F.normalize(kd[b], dim=0)
        for s in range(bq.shape[1]):
            t = int((bq[:, s] @ bk).argmax())
            total += infonce_by_hand(rq[:, s : s + 1].T, rk[:, t : t + 1].T, dense_queue, 0.2)
            rows += 1
    dense_loss = total / rows
    assert math.isclose(float(out["loss_global"]), global_loss, rel_tol=1e-4)
    assert math.isclose(float(out["loss_dense"]), dense_loss, rel_tol=1e-4)
    assert math.isclose(float(out["loss"].detach()), 0.5 * global_loss + 0.5 * dense_loss, rel_tol=1e-4)
    # the dense queue receives one pooled, normalised key per image
    pooled = F.normalize(kd.mean(dim=2), dim=1)
    assert torch.allclose(model.dense_queue.keys[:2], pooled, atol=1e-6)


def test_densecl_lambda_weights_terms():
    cfg = DenseCLConfig(dim=4, hidden_dim=6, queue_size=16, loss_lambda=0.0)
    out = DenseCL(cfg, tiny_factory())(random_views(2), step0())
    assert math.isclose(float(out["loss"].detach()), float(out["loss_global"]), rel_tol=1e-6)

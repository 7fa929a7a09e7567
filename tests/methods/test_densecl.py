"""DenseCL's matching and losses against their formulas, computed by hand on tiny cases."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from densessl.methods.densecl import DenseCL, DenseCLConfig, match_locations
from tests.helpers import infonce_by_hand, random_views, step0, tiny_factory


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

"""MoCo-v2's loss against its formula, its enqueue and its momentum teacher, on tiny cases."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from densessl.methods.mocov2 import MoCoV2, MoCoV2Config
from tests.helpers import infonce_by_hand, random_views, step0, tiny_factory


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

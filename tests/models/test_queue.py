"""The negative queue: InfoNCE against it, and its ring buffer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from densessl.models.queue import NegativeQueue, queue_infonce
from tests.helpers import infonce_by_hand


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


def test_a_push_larger_than_the_queue_keeps_its_newest_rows_in_order():
    queue = NegativeQueue(dim=1, size=5)
    queue.push(torch.zeros(2, 1))
    queue.push(torch.arange(7, dtype=torch.float32).view(7, 1))
    # rows 2..6 survive, written from the pointer (2) on and wrapped around
    assert queue.keys[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert int(queue.ptr) == 2

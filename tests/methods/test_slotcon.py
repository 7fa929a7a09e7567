"""SlotCon's geometry, losses and bookkeeping on hand-made cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from densessl.methods import Step
from densessl.methods.slotcon import (
    SemanticGrouping,
    SlotCon,
    SlotConConfig,
    active_slots,
    align_to_overlap,
    group_loss,
    slot_contrast,
)
from densessl.views.geometry import overlap_boxes_batch
from tests.helpers import random_views, tiny_factory


def source_coordinate_map(box: tuple[int, int, int, int], flipped: bool, grid: int) -> torch.Tensor:
    """(1, 2, grid, grid): the source-image (x, y) seen at each cell centre of a view."""
    left, top, width, height = box
    j = torch.arange(grid, dtype=torch.float64) + 0.5
    xs = left + j * width / grid
    if flipped:
        xs = left + width - j * width / grid
    ys = top + j * height / grid
    return torch.stack([xs.view(1, -1).expand(grid, grid), ys.view(-1, 1).expand(grid, grid)]).unsqueeze(0)


@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
def test_aligned_cells_of_both_views_land_on_the_same_source_pixels(flips):
    boxes = torch.tensor([[[10, 20, 80, 80], [40, 30, 64, 96]]])
    flip = torch.tensor([flips])
    b1, b2, valid = overlap_boxes_batch(boxes[:, 0], flip[:, 0], boxes[:, 1], flip[:, 1])
    assert bool(valid[0])
    grid = 16
    maps = [source_coordinate_map(tuple(boxes[0, v].tolist()), flips[v], grid).float() for v in range(2)]
    a1 = align_to_overlap(maps[0], b1, flip[:, 0])
    a2 = align_to_overlap(maps[1], b2, flip[:, 1])
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # away from RoIAlign's border clamping
    assert torch.allclose(a1[inner], a2[inner], atol=1e-3)
    # the aligned grid spans the overlap (40..90 in x, 30..100 in y), in source orientation
    assert a1[0, 0, 0, 2] < a1[0, 0, 0, -3] and a1[0, 1, 2, 0] < a1[0, 1, -3, 0]
    assert float(a1[0, 0].min()) > 40 and float(a1[0, 0].max()) < 90


def test_group_loss_equals_formula():
    torch.manual_seed(0)
    s, t, c = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2), torch.randn(1, 3)
    valid = torch.tensor([True, False])
    loss = group_loss(s, t, c, 0.1, 0.07, valid)
    total = 0.0
    for y in range(2):
        for x in range(2):
            p = F.softmax((t[0, :, y, x] - c[0]) / 0.07, dim=0)
            log_q = F.log_softmax(s[0, :, y, x] / 0.1, dim=0)
            total += float(-(p * log_q).sum())
    assert math.isclose(float(loss), total / 4, rel_tol=1e-5)


def test_slot_contrast_targets_and_formula():
    torch.manual_seed(0)
    predicted = torch.randn(2, 3, 4)
    keys = torch.randn(2, 3, 4)
    student = torch.tensor([[True, True, False], [False, True, True]])
    teacher = torch.tensor([[True, False, True], [True, True, True]])
    loss = slot_contrast(predicted, student, keys, teacher, 0.2)
    active = [(b, k) for b in range(2) for k in range(3) if teacher[b, k]]
    queries = [(b, k) for b in range(2) for k in range(3) if student[b, k] and teacher[b, k]]
    total = 0.0
    for b, k in queries:
        q = F.normalize(predicted[b, k], dim=0)
        logits = torch.stack([q @ F.normalize(keys[bb, kk], dim=0) for bb, kk in active]) / 0.2
        total += float(-F.log_softmax(logits, dim=0)[active.index((b, k))])
    assert math.isclose(float(loss), total / len(queries) * 0.4, rel_tol=1e-5)


def test_active_slots_from_argmax():
    scores = torch.zeros(1, 3, 1, 2)
    scores[0, 2, 0, 0] = 1.0
    scores[0, 0, 0, 1] = 1.0
    assert active_slots(scores).tolist() == [[True, False, True]]


def make_model() -> SlotCon:
    cfg = SlotConConfig(num_prototypes=5, hidden_dim=12, dim=6, teacher_momentum=0.9)
    return SlotCon(cfg, tiny_factory())


def slotcon_views():
    views = random_views(4, size=16)
    views.boxes = torch.tensor([[0, 0, 16, 16], [4, 4, 12, 12]]).expand(4, 2, 4).clone()
    views.flips = torch.tensor([[False, True], [True, False], [False, False], [True, True]])
    return views


def test_forward_updates_teacher_and_center_and_exports_teacher():
    model = make_model()
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(0.5)
    before = [p.clone() for p in model.encoder_k.parameters()]
    out = model(slotcon_views(), Step(0, 10, 0, torch.Generator().manual_seed(0)))
    assert torch.isfinite(out["loss"]) and float(out["overlap_fraction"]) == 1.0
    out["loss"].backward()
    m = 0.9  # cosine schedule at step 0
    for t, t0, s in zip(model.encoder_k.parameters(), before, model.encoder_q.parameters(), strict=True):
        assert torch.allclose(t, m * t0 + (1 - m) * s.detach(), atol=1e-6)
    assert float(model.center.abs().sum()) > 0
    assert model.export_encoder() is model.encoder_k


def test_center_update_formula():
    model = make_model()
    model.center.fill_(1.0)
    scores = torch.randn(4, 5, 3, 3)
    model.update_center(scores)
    assert torch.allclose(model.center, 0.9 + 0.1 * scores.mean(dim=(0, 2, 3)).unsqueeze(0), atol=1e-6)


def test_disjoint_crops_are_left_out_of_the_group_loss():
    model = make_model()
    views = slotcon_views()
    views.boxes[0] = torch.tensor([[0, 0, 8, 8], [10, 10, 6, 6]])
    out = model(views, Step(0, 10, 0, torch.Generator().manual_seed(0)))
    assert float(out["overlap_fraction"]) == 0.75 and torch.isfinite(out["loss"])


def slot_case():
    g = torch.Generator().manual_seed(3)
    predicted = torch.randn(4, 3, 4, generator=g)
    keys = torch.randn(4, 3, 4, generator=g)
    student = torch.rand(4, 3, generator=g) > 0.3
    teacher = torch.rand(4, 3, generator=g) > 0.3
    return predicted, keys, student, teacher


def slot_loss_by_hand(rows: range) -> float:
    predicted, keys, student, teacher = slot_case()
    active = [(b, k) for b in range(4) for k in range(3) if teacher[b, k]]
    queries = [(b, k) for b in rows for k in range(3) if student[b, k] and teacher[b, k]]
    total = 0.0
    for b, k in queries:
        q = F.normalize(predicted[b, k], dim=0)
        logits = torch.stack([q @ F.normalize(keys[bb, kk], dim=0) for bb, kk in active]) / 0.2
        total += float(-F.log_softmax(logits, dim=0)[active.index((b, k))])
    return total / len(queries) * 0.4


def _slot_worker(rank: int, world: int) -> float:
    predicted, keys, student, teacher = (t.chunk(world)[rank] for t in slot_case())
    return float(slot_contrast(predicted, student, keys, teacher, 0.2))


def test_gathered_slot_targets_point_at_the_right_keys_with_two_processes():
    from tests.helpers import run_in_gloo_processes

    results = run_in_gloo_processes(_slot_worker)
    assert math.isclose(results[0], slot_loss_by_hand(range(0, 2)), rel_tol=1e-5)
    assert math.isclose(results[1], slot_loss_by_hand(range(2, 4)), rel_tol=1e-5)


def test_the_slot_predictor_sees_exactly_the_query_set():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return x

    predicted, keys, student, teacher = slot_case()
    with_predictor = slot_contrast(predicted, student, keys, teacher, 0.2, Recorder())
    assert seen == [int((student & teacher).sum())]
    without = slot_contrast(predicted, student, keys, teacher, 0.2)
    assert float(with_predictor) == pytest.approx(float(without))


def far_apart_views():
    """Four samples of a wide 100 x 400 image; sample 1's crops lie far apart side by side, so its
    overlap box is inverted by many times the view's width (sample 3's only just)."""
    views = slotcon_views()
    views.image_sizes[:] = torch.tensor([100, 400])
    views.boxes[1] = torch.tensor([[0, 0, 10, 100], [300, 0, 10, 100]])
    views.boxes[3] = torch.tensor([[0, 0, 16, 16], [17, 0, 16, 16]])
    return views


def test_an_inverted_overlap_box_is_resampled_over_the_whole_view():
    scores = torch.randn(2, 3, 8, 8)
    inverted = torch.tensor([[30.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.25, 0.25]])
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    flips = torch.tensor([False, True])
    out = align_to_overlap(scores, inverted, flips)
    assert torch.equal(out, align_to_overlap(scores, whole, flips))


def test_crops_far_apart_give_a_finite_loss_and_gradients_and_no_group_term():
    views = far_apart_views()
    b1, _, valid = overlap_boxes_batch(
        views.boxes[:, 0], views.flips[:, 0], views.boxes[:, 1], views.flips[:, 1]
    )
    assert valid.tolist() == [True, False, True, False] and float(b1[1, 0] - b1[1, 2]) > 20
    model = make_model()
    out = model(views, Step(0, 10, 0, torch.Generator().manual_seed(0)))
    assert float(out["overlap_fraction"]) == 0.5 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)

    # where the disjoint crops lie does not matter: they add nothing to the group loss
    moved = far_apart_views()
    moved.boxes[1] = torch.tensor([[0, 0, 10, 100], [12, 0, 10, 100]])
    again = make_model()(moved, Step(0, 10, 0, torch.Generator().manual_seed(0)))
    assert float(again["loss_group"]) == pytest.approx(float(out["loss_group"]), rel=1e-6)


def test_a_short_run_on_a_folder_of_elongated_photos(tmp_path):
    """Wide and tall images make many disjoint view pairs; the run must train through them."""
    from densessl.config import load_config
    from densessl.training.trainer import Trainer

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(16):
        shape = (40, 400, 3) if i % 2 else (400, 40, 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
    overrides = [
        f"data.source=folder:{tmp_path / 'img'}",
        "data.workers=0",
        "train.batch_size=8",
        "train.max_steps=2",
        "train.log_every=1",
        "train.tensorboard=false",
        "train.progress=false",
        "train.precision=fp32",
        "views.*.crop.size=32",
        "model.width=0.125",
        "method.num_prototypes=8",
        "method.hidden_dim=16",
    ]
    recipe = Path(__file__).resolve().parents[2] / "densessl/recipes/quick/slotcon_synthetic.yaml"
    Trainer(load_config(recipe, overrides), tmp_path / "run").fit()
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert min(r["overlap_fraction"] for r in rows) < 1.0  # the case under test did occur


def test_semantic_grouping_equals_its_formula():
    torch.manual_seed(0)
    grouping = SemanticGrouping(num_prototypes=3, dim=4, temperature=0.07)
    z = torch.randn(2, 4, 2, 3)
    slots, scores = grouping(z)
    protos = F.normalize(grouping.prototypes.weight, dim=1)
    for b in range(2):
        pixels = z[b].flatten(1).T
        cosine = F.normalize(pixels, dim=1) @ protos.T
        assert torch.allclose(scores[b].flatten(1).T, cosine, atol=1e-6)
        # each pixel shares itself among the prototypes; a slot averages the raw pixels it got
        attention = (cosine / 0.07).softmax(dim=1) + 1e-6
        for k in range(3):
            expected = (attention[:, k : k + 1] * pixels).sum(0) / attention[:, k].sum()
            assert torch.allclose(slots[b, k], expected, atol=1e-5), (b, k)

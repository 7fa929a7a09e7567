"""The fused, chunked InfoNCE against a queue: the plain formulas' values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densessl.methods.revisited_moco import neighbour_loss
from densessl.models import infonce
from densessl.models.infonce import queue_infonce, queue_infonce_and_neighbours, queue_logsumexp


def plain_infonce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, t: float) -> torch.Tensor:
    """Cross-entropy over the concatenated [positive, negatives] logits, the positive at index 0."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.t()], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def formula_infonce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, t: float) -> torch.Tensor:
    """The unfused formula as the methods computed it, operation for operation."""
    q = q / t
    pos = (q * k).sum(dim=1)
    return (torch.logaddexp(pos, torch.logsumexp(q @ negatives.t(), dim=1)) - pos).mean()


def unit(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return F.normalize(
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=-1
    )


def inputs(n: int = 6, k: int = 23, d: int = 8, dtype: torch.dtype = torch.float32):
    q = unit(n, d, seed=0, dtype=dtype).requires_grad_(True)
    pos = unit(n, d, seed=1, dtype=dtype).requires_grad_(True)
    return q, pos, unit(k, d, seed=2, dtype=dtype)


@pytest.mark.parametrize("chunk_size", [1, 5, 22, 23, 4096])
def test_value_and_gradients_equal_the_plain_formula_for_any_chunking(chunk_size):
    q, pos, negatives = inputs()
    fused = queue_infonce(q, pos, negatives, 0.2, chunk_size=chunk_size)
    grads = torch.autograd.grad(fused, [q, pos])
    plain = plain_infonce(q, pos, negatives, 0.2)
    expected = torch.autograd.grad(plain, [q, pos])
    assert fused.dtype == torch.float32
    assert float(fused.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_blocks_of_rows_give_the_numbers_of_all_rows_at_once(monkeypatch):
    q, pos, negatives = inputs()
    whole = queue_infonce(q, pos, negatives, 0.2, chunk_size=5)
    monkeypatch.setattr(infonce, "ROW_BLOCK", 4)  # 6 rows: a block of 4, then one of 2
    blocked = queue_infonce(q, pos, negatives, 0.2, chunk_size=5)
    assert float(blocked.detach()) == pytest.approx(float(whole.detach()), rel=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(blocked, q)[0], torch.autograd.grad(whole, q)[0], rtol=1e-6, atol=1e-7
    )


def test_a_queue_within_one_chunk_gives_the_unfused_numbers_to_the_last_bit():
    # the pinned training runs (tests/methods/test_golden_losses.py) use a 32-entry queue: a
    # last-bit difference in a gradient grows to 1e-5 in their tenth loss
    q, pos, negatives = inputs(k=16)
    q_formula = q.detach().clone().requires_grad_(True)
    formula = formula_infonce(q_formula, pos.detach(), negatives, 0.2)
    for chunk_size in (16, 1000):
        fused = queue_infonce(q, pos.detach(), negatives, 0.2, chunk_size=chunk_size)
        assert torch.equal(fused, formula)
        assert torch.equal(
            torch.autograd.grad(fused, q)[0], torch.autograd.grad(formula, q_formula, retain_graph=True)[0]
        )


def test_a_larger_logit_in_a_later_chunk_rescales_what_was_summed_before():
    # sorted ascending, each chunk holds a new maximum; at T = 0.01 the logits span 200, so a
    # chunk summed against a stale maximum would overflow or be off by orders of magnitude
    q = F.normalize(torch.ones(2, 3), dim=1)
    negatives = F.normalize(torch.randn(40, 3, generator=torch.Generator().manual_seed(3)), dim=1)
    negatives = negatives[(negatives @ q[0]).argsort()]
    expected = torch.logsumexp(q @ negatives.t() / 0.01, dim=1)
    torch.testing.assert_close(queue_logsumexp(q, negatives, 0.01, chunk_size=7), expected, rtol=1e-6, atol=0)
    pos = F.normalize(torch.randn(2, 3, generator=torch.Generator().manual_seed(4)), dim=1)
    fused = queue_infonce(q, pos, negatives, 0.01, chunk_size=7)
    assert float(fused.detach()) == pytest.approx(float(plain_infonce(q, pos, negatives, 0.01)), rel=1e-6)


def test_gradcheck_in_float64_over_several_chunks():
    q, pos, negatives = inputs(n=4, k=10, d=5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: queue_infonce(a, b, negatives, 0.3, chunk_size=3), (q, pos))
    neighbours = torch.tensor([[0, 9], [3, 3], [4, 7], [8, 1]])
    assert torch.autograd.gradcheck(
        lambda a, b: queue_infonce_and_neighbours(a, b, negatives, 0.3, neighbours, chunk_size=4), (q, pos)
    )


def test_the_neighbour_term_is_the_log_softmax_over_the_queue_at_the_indices():
    q, pos, negatives = inputs()
    neighbours = torch.tensor([[0, 22, 5], [1, 1, 2], [9, 8, 7], [3, 4, 5], [20, 21, 22], [0, 6, 12]])
    moco, knn = queue_infonce_and_neighbours(q, pos, negatives, 0.2, neighbours, chunk_size=5)
    total = moco + 0.4 * knn
    grads = torch.autograd.grad(total, [q, pos])
    plain_moco = plain_infonce(q, pos, negatives, 0.2)
    plain_knn = neighbour_loss(q @ negatives.t() / 0.2, neighbours)
    expected = torch.autograd.grad(plain_moco + 0.4 * plain_knn, [q, pos])
    assert float(moco.detach()) == pytest.approx(float(plain_moco.detach()), rel=1e-6)
    assert float(knn.detach()) == pytest.approx(float(plain_knn.detach()), rel=1e-6)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [16, 40])
def test_under_autocast_the_products_are_half_and_the_sums_float32(chunk_size, monkeypatch):
    q, pos, negatives = inputs(n=8, k=40, d=16, dtype=torch.bfloat16)
    products = []
    matmul = infonce._matmul

    def recording(a, b, out_dtype):
        products.append((a.dtype, b.dtype, out_dtype))
        return matmul(a, b, out_dtype)

    monkeypatch.setattr(infonce, "_matmul", recording)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = queue_infonce(q, pos, negatives, 0.2, chunk_size=chunk_size)
    (grad,) = torch.autograd.grad(fused, q)
    assert products and set(products) == {(torch.bfloat16, torch.bfloat16, torch.float32)}
    # the plain formula in float32 on the same (bf16-rounded) values, outside autocast: the only
    # difference left is the rounding of q / T and of each product's output to bf16
    q32 = q.detach().float().requires_grad_(True)
    plain = plain_infonce(q32, pos.detach().float(), negatives.float(), 0.2)
    (expected,) = torch.autograd.grad(plain, q32)
    assert fused.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert float(fused.detach()) == pytest.approx(float(plain.detach()), rel=2e-4)
    torch.testing.assert_close(grad.float(), expected, rtol=0.02, atol=2e-3)
    products.clear()
    queue_infonce(q.float(), pos.float(), negatives.float(), 0.2, chunk_size=chunk_size)
    assert set(products) == {(torch.float32, torch.float32, torch.float32)}, "float32 outside autocast"


def test_half_products_move_a_dense_sized_loss_by_less_than_1e_5():
    # DenseCL's dense term at the quick recipe's scale: 512 rows of 128 dims against 4096 keys
    q, pos, negatives = unit(512, 128, seed=0), unit(512, 128, seed=1), unit(4096, 128, seed=2)
    exact = queue_infonce(q, pos, negatives, 0.2, chunk_size=1024)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = queue_infonce(q, pos, negatives, 0.2, chunk_size=1024)
    assert float(half) == pytest.approx(float(exact), rel=1e-5)


def test_a_constant_positive_and_no_gradient_at_all_are_fine():
    q, pos, negatives = inputs()
    fused = queue_infonce(q, pos.detach(), negatives, 0.2, chunk_size=5)
    assert torch.autograd.grad(fused, q)[0].shape == q.shape
    with torch.no_grad():
        frozen = queue_infonce(q, pos, negatives, 0.2, chunk_size=5)
    assert not frozen.requires_grad
    assert float(frozen.detach()) == pytest.approx(float(fused.detach()), rel=1e-7)


def test_negatives_are_a_buffer_and_are_refused_if_they_want_a_gradient():
    q, pos, negatives = inputs()
    with pytest.raises(ValueError, match="buffer"):
        queue_infonce(q, pos, negatives.requires_grad_(True), 0.2)

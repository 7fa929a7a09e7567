"""Contrastive losses against a queue of negatives, fused and chunked over the queue.

The MoCo family scores N queries against K queued keys (K = 65536 in the papers' recipes). Written
plainly, the (N, K) logits are built, then walked by the log-sum-exp, and walked again in the
backward pass (softmax, then a matrix product with the queue): for DenseCL's dense term, N is
every location of every image (784 rows for 16 images at 7 x 7) and the logits alone are 200 MiB
of float32, so the loss is bound by memory traffic rather than arithmetic.

Everything the losses need from the (N, K) logits is one number per row, the log-sum-exp over
the queue, and its gradient, the softmax-weighted mean of the queue rows. :class:`_QueueLogSumExp`
computes both in one pass over the queue, ``chunk_size`` columns at a time, with a running
maximum per row (the log-sum-exp of the chunks seen so far is rescaled when a larger logit
arrives), the way memory-efficient attention accumulates its output, and a block of rows at a
time. One (rows, chunk) tile of logits is alive at once; nothing of size (N, K) exists in the
forward or the backward pass, and the backward pass is an (N, D) multiply. Computing the
gradient's direction in the forward pass costs one (rows, chunk) x (chunk, D) product per tile,
the same work the plain backward pass does, and saves recomputing the logits; it is skipped when
no gradient is needed. A queue no longer than one chunk (the tests' and the small recipes') takes
a single pass that repeats the plain formula's operations and gives its numbers to the last bit.

The queue is a buffer: no gradient flows into the negatives (passing negatives that require a
gradient is refused rather than silently given none). Outside autocast the arithmetic is float32
whatever the inputs' type (float64 inputs stay float64, for gradcheck). Under bf16 or fp16
autocast the two matrix products (the logits and the softmax-weighted sum of the queue) run in
the autocast type, the way autocast runs every other product of the step, and everything that
accumulates across the queue stays float32: the logits are float32 when they leave the product
(directly on CUDA, converted on other devices, where a product's output is rounded to the half
type: 2^-9 of a logit, about 3e-4 of the log-sum-exp and 1e-6 of DenseCL's loss), and the running
maximum, exponentials, sums and the accumulated direction are float32. On a CPU with bf16 matrix
units the products run 4-10x faster than in float32.

Thin wrappers build the losses on that core: :func:`queue_infonce` (MoCo-v2, DenseCL's global and
dense terms, the revisited MoCo's MoCo term) and :func:`queue_infonce_and_neighbours`, which adds
the revisited MoCo's nearest-neighbour term (``-mean log softmax`` over the queue at given queue
indices) from the same pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

#: Queue columns per chunk, by measurement (benchmarks/infonce.py, one CPU thread, D = 128):
#: against K = 65536 keys, 512 to 4096 columns were within noise of each other for N = 64 and
#: N = 784 rows (2.0x and 2.5x faster than the plain formula); against K = 4096 (the quick
#: recipes) 2048 was ahead. An (N, 2048) float32 chunk is 6 MiB at N = 784. A queue no longer
#: than one chunk takes the single-pass path of the plain formula. Not measured on a GPU, where
#: fewer, larger chunks may pay: ``chunk_size`` is a keyword of every loss.
CHUNK_SIZE = 2048

#: Rows per block of the chunked pass. For DenseCL's quick recipe (128 images x 36 locations =
#: 4608 rows against 4096 keys) blocks of 256 to 512 rows took the loss from 170-190 ms to
#: 135 ms (one CPU thread); with fewer rows than a block, nothing changes.
ROW_BLOCK = 512


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input's own type for float32 and float64."""
    return torch.promote_types(dtype, torch.float32)


def _product_dtype(device_type: str) -> torch.dtype | None:
    """The half type autocast runs products in on ``device_type``, or None outside autocast."""
    if not torch.is_autocast_enabled(device_type):
        return None
    dtype = torch.get_autocast_dtype(device_type)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _matmul(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``a @ b`` as ``out_dtype``; for half inputs on CUDA straight from float32 accumulators."""
    if a.dtype == out_dtype:
        return a @ b
    if a.is_cuda and _CUDA_OUT_DTYPE[0]:
        try:
            return torch.mm(a, b, out_dtype=out_dtype)
        except (RuntimeError, TypeError):
            # a build or GPU without the mixed-type product: the rounded product, as elsewhere
            _CUDA_OUT_DTYPE[0] = False
    return (a @ b).to(out_dtype)


# whether torch.mm's out_dtype works here; cleared on the first refusal
_CUDA_OUT_DTYPE = [True]


def _chunked_logsumexp(
    scaled: torch.Tensor,
    negatives: torch.Tensor,
    chunk_size: int,
    with_direction: bool,
    product_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row ``log sum_j exp(scaled . negatives_j)`` (N,) and, with ``with_direction``, the
    softmax-weighted mean of the negatives (N, D), its gradient with respect to ``scaled``.
    ``product_dtype``: the type of the matrix products (None: ``scaled``'s own)."""
    # rows are independent: a block of them at a time keeps each (rows, chunk) tile of logits in
    # cache however many rows there are (DenseCL's dense term has one per location)
    parts = [
        _block_logsumexp(block, negatives, chunk_size, with_direction, product_dtype)
        for block in scaled.split(ROW_BLOCK)
    ]
    if len(parts) == 1:
        return parts[0]
    lse = torch.cat([lse for lse, _ in parts])
    return lse, torch.cat([d for _, d in parts if d is not None]) if with_direction else None


def _block_logsumexp(
    scaled: torch.Tensor,
    negatives: torch.Tensor,
    chunk_size: int,
    with_direction: bool,
    product_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_chunked_logsumexp` of one block of rows, a chunk of the queue at a time."""
    accumulate = scaled.dtype
    product = product_dtype or accumulate
    rows = scaled.to(product)
    top = total = direction = None
    for start in range(0, negatives.shape[0], chunk_size):
        # a queue kept in another precision is converted one chunk at a time, never whole
        chunk = negatives[start : start + chunk_size].to(product)
        weights = _matmul(rows, chunk.t(), accumulate)
        chunk_top = weights.amax(dim=1)
        if top is None:  # first chunk: nothing to rescale
            top = chunk_top
            weights.sub_(top.unsqueeze(1)).exp_()
            total = weights.sum(dim=1)
            if with_direction:
                direction = _matmul(weights.to(product), chunk, accumulate)
            continue
        new_top = torch.maximum(top, chunk_top)
        # what was summed against the old maximum, re-expressed against the new one
        rescale = (top - new_top).exp_()
        weights.sub_(new_top.unsqueeze(1)).exp_()
        total = total.mul_(rescale).add_(weights.sum(dim=1))
        if with_direction:
            direction = direction.mul_(rescale.unsqueeze(1))
            if product == accumulate:
                direction.addmm_(weights, chunk)
            else:
                direction.add_(_matmul(weights.to(product), chunk, accumulate))
        top = new_top
    if top is None:
        raise ValueError("the queue of negatives is empty")
    if direction is not None:
        direction = direction.div_(total.unsqueeze(1))
    return top + total.log(), direction


class _QueueLogSumExp(torch.autograd.Function):
    """``logsumexp(scaled @ negatives.T, dim=1)`` with a gradient for ``scaled`` only."""

    @staticmethod
    def forward(
        ctx: Any,
        scaled: torch.Tensor,
        negatives: torch.Tensor,
        chunk_size: int,
        product_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        with_grad = bool(ctx.needs_input_grad[0])
        ctx.small = negatives.shape[0] <= chunk_size
        # the products run in product_dtype; autocast would also run the sums in half precision
        with torch.autocast(scaled.device.type, enabled=False):
            if ctx.small:
                # a queue within one chunk: its logits are no larger than a chunk's, so keep them
                # and do exactly the plain formula's operations, which gives its numbers to the
                # last bit (a pinned training run is chaotic enough that a 1e-7 difference in a
                # gradient moves its tenth loss by 1e-5)
                product = product_dtype or scaled.dtype
                logits = _matmul(scaled.to(product), negatives.to(product).t(), scaled.dtype)
                negatives = negatives.to(scaled.dtype)
                lse = torch.logsumexp(logits, dim=1)
                if with_grad:
                    ctx.save_for_backward(logits, lse, negatives)
                return lse
            lse, direction = _chunked_logsumexp(scaled, negatives, chunk_size, with_grad, product_dtype)
        if with_grad:
            ctx.save_for_backward(direction)
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_lse: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        if ctx.small:
            logits, lse, negatives = ctx.saved_tensors
            return (grad_lse.unsqueeze(1) * (logits - lse.unsqueeze(1)).exp()) @ negatives, None, None, None
        (direction,) = ctx.saved_tensors
        return grad_lse.unsqueeze(1) * direction, None, None, None


def _scaled_query(query: torch.Tensor, temperature: float) -> torch.Tensor:
    # scaling the (N, D) queries instead of the (N, K) logits: one small multiply
    return query.to(_compute_dtype(query.dtype)) / temperature


def _queue_logsumexp(scaled: torch.Tensor, negatives: torch.Tensor, chunk_size: int) -> torch.Tensor:
    if negatives.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "the negatives are a queue (a buffer): pass them detached, no gradient flows into them"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if scaled.shape[1] != negatives.shape[1]:
        raise ValueError(
            f"queries of dimension {scaled.shape[1]} against negatives of dimension {negatives.shape[1]}"
        )
    return _QueueLogSumExp.apply(scaled, negatives, chunk_size, _product_dtype(scaled.device.type))


def queue_logsumexp(
    query: torch.Tensor, negatives: torch.Tensor, temperature: float, *, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """``logsumexp(query @ negatives.T / temperature, dim=1)``, (N,), in float32 (float64 for
    float64 queries), without building the (N, K) logits; differentiable in ``query`` only."""
    return _queue_logsumexp(_scaled_query(query, temperature), negatives, chunk_size)


def _infonce(scaled: torch.Tensor, positive: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    pos = (scaled * positive.to(scaled.dtype)).sum(dim=1)
    # cross-entropy with the positive at index 0: log(e^pos + sum_j e^neg_j) - pos
    return (torch.logaddexp(pos, lse) - pos).mean()


def queue_infonce(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """InfoNCE with one positive per row and a shared set of negatives.

    ``query`` and ``positive`` are (N, D) unit vectors, ``negatives`` (K, D). Logits are
    [q.k+, q.n_1 .. q.n_K] / T with the positive at index 0; the loss is the mean cross-entropy
    over the N rows, a float32 scalar. Gradients reach ``query`` and, if it requires one,
    ``positive``; never ``negatives``.
    """
    scaled = _scaled_query(query, temperature)
    return _infonce(scaled, positive, _queue_logsumexp(scaled, negatives, chunk_size))


def queue_infonce_and_neighbours(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    neighbours: torch.Tensor,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`queue_infonce` and the nearest-neighbour term of the same queries, from one pass.

    ``neighbours`` (N, k) are queue indices taken as extra positives: the second loss is
    ``-mean log softmax(query @ negatives.T / T)`` at those indices, the softmax over the queue
    alone (the row's own positive is not in its denominator), averaged over all N x k entries.
    """
    scaled = _scaled_query(query, temperature)
    lse = _queue_logsumexp(scaled, negatives, chunk_size)
    # the k picked logits from an (N, k, D) gather, small beside the queue; a product and a sum
    # rather than a batched matmul, which autocast would run in half precision
    picked = (scaled.unsqueeze(1) * negatives[neighbours].to(scaled.dtype)).sum(dim=2)
    return _infonce(scaled, positive, lse), (lse.unsqueeze(1) - picked).mean()

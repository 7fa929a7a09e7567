"""The InfoNCE against a queue alone, forward and backward: the plain formula against the fused one.

The plain formula is the one the methods used before the fused loss (``plain_infonce`` below): it
builds the (N, K) logits and walks them in the log-sum-exp and again in the backward pass. The
fused one is :func:`densessl.models.infonce.queue_infonce`, chunked over the queue. Shapes are
those of the MoCo family: MoCo-v2 (N = batch rows, K = 65536, D = 128) and DenseCL's dense term
(N = batch x 49 locations of a 7 x 7 res5 map). The variants are timed in alternation (one call
of each in turn, ``--iters`` times), so that their ratios hold on a shared machine; medians in
milliseconds, then one JSON line. Usage::

    OMP_NUM_THREADS=1 python benchmarks/infonce.py
    OMP_NUM_THREADS=1 python benchmarks/infonce.py --rows 64 784 --chunks 1024 4096 8192 32768
    OMP_NUM_THREADS=1 python benchmarks/infonce.py --autocast bf16   # bf16 queries under autocast

``step_time.py`` reads ``DENSESSL_PLAIN_INFONCE=1`` to put :func:`install_plain` in the methods,
the "before" of a step-time comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from densessl.models.infonce import queue_infonce


def plain_infonce(
    query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The formula before fusion: the full (N, K) logits, then a log-sum-exp over them."""
    query = query.float() / temperature
    pos = (query * positive.float()).sum(dim=1)
    neg = query @ negatives.float().t()
    return (torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos).mean()


def plain_infonce_and_neighbours(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    neighbours: torch.Tensor,
    **_: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The revisited MoCo's two terms as computed before fusion: two products with the queue."""
    from densessl.methods.revisited_moco import neighbour_loss

    logits = query.float() @ negatives.float().t() / temperature
    return plain_infonce(query, positive, negatives, temperature), neighbour_loss(logits, neighbours)


def install_plain() -> None:
    """Point the methods' loss call sites at the plain formulas (benchmarks only)."""
    from densessl.methods import densecl, mocov2, revisited_moco

    def plain(query, positive, negatives, temperature, **_):
        return plain_infonce(query, positive, negatives, temperature)

    for module in (densecl, mocov2, revisited_moco):
        module.queue_infonce = plain
    revisited_moco.queue_infonce_and_neighbours = plain_infonce_and_neighbours


def measure(
    rows: int, queue: int, dim: int, chunks: list[int], iters: int, autocast: torch.dtype | None
) -> dict[str, float]:
    """Median milliseconds of forward + backward of each variant, timed in alternation."""
    g = torch.Generator().manual_seed(0)
    dtype = autocast or torch.float32
    query = F.normalize(torch.randn(rows, dim, generator=g), dim=1).to(dtype).requires_grad_(True)
    positive = F.normalize(torch.randn(rows, dim, generator=g), dim=1).to(dtype)
    negatives = F.normalize(torch.randn(queue, dim, generator=g), dim=1)
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "plain": lambda: plain_infonce(query, positive, negatives, 0.2),
        **{
            f"fused_{c}": (lambda c=c: queue_infonce(query, positive, negatives, 0.2, chunk_size=c))
            for c in chunks
        },
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(iters + 1):  # the first round warms up
        for name, fn in variants.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                loss = fn()
            loss.backward()
            query.grad = None
            if i:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[64, 784], help="N: 64 (MoCo-v2), 784 (DenseCL, 16 x 49)"
    )
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunks", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--autocast", choices=["none", "bf16"], default="none")
    args = parser.parse_args()
    autocast = torch.bfloat16 if args.autocast == "bf16" else None
    report = {
        "threads": torch.get_num_threads(),
        "queue": args.queue,
        "dim": args.dim,
        "autocast": args.autocast,
    }
    report["runs"] = []
    for rows in args.rows:
        ms = measure(rows, args.queue, args.dim, args.chunks, args.iters, autocast)
        report["runs"].append({"rows": rows, "ms": ms})
        print(f"N={rows} K={args.queue} D={args.dim} ({args.autocast}), forward + backward, median ms:")
        for name, value in ms.items():
            print(f"  {name:12s} {value:9.1f}   plain / this {ms['plain'] / value:5.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

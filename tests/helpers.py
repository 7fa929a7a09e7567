"""Small models and data shared by the tests."""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densessl.methods import Step, Views


class TinyBackbone(nn.Module):
    """A BN-free conv net with the backbone contract (dense map out, ``out_channels``).

    Without batch norm every sample is encoded independently, so results do not depend on how a
    batch is split across processes: the property the distributed-equivalence tests need.
    """

    def __init__(self, out_channels: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, out_channels, 3, padding=1)
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_factory(seed: int = 0):
    def factory() -> TinyBackbone:
        torch.manual_seed(seed)
        return TinyBackbone()

    return factory


def random_views(batch: int, size: int = 8, seed: int = 0, num_views: int = 2) -> Views:
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(batch, 3, size, size, generator=g) for _ in range(num_views)]
    return Views(
        images=images,
        boxes=torch.zeros(batch, num_views, 4, dtype=torch.long),
        flips=torch.zeros(batch, num_views, dtype=torch.bool),
        image_sizes=torch.full((batch, 2), size),
    )


def step0() -> Step:
    return Step(step=0, total_steps=10, epoch=0, generator=torch.Generator().manual_seed(0))


def infonce_by_hand(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, t: float) -> float:
    """InfoNCE of each query against its key and the negatives, one exp at a time."""
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ n) / t) for n in negatives)
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def stripe_features(
    n: int, k: int, seed: int, grid: int = 8, cell: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical-stripe masks (n, grid*cell, grid*cell) and one-hot (n, k, grid, grid) features.

    Stripes keep bilinear upsampling one-dimensional, so the cell a pixel lies in always wins.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (n, 1, grid), generator=gen).expand(n, grid, grid)
    masks = coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2).to(torch.uint8)
    feats = F.one_hot(coarse, k).permute(0, 3, 1, 2).float().contiguous()
    return feats, masks


#: a trainer run of 8 images a step in fp32, in the process, logging every step and nothing else
SMALL_RUN = [
    "data.workers=0",
    "train.batch_size=8",
    "train.epochs=2",
    "train.log_every=1",
    "train.tensorboard=false",
    "train.progress=false",
    "train.precision=fp32",
]

#: the DenseCL quick recipe, and overrides that make a trainer run take a second on a CPU
QUICK = Path(__file__).resolve().parent.parent / "densessl/recipes/quick/densecl_synthetic.yaml"
TINY = [
    "data.synthetic_length=48",
    "data.workers=0",
    "train.batch_size=8",
    "train.epochs=2",
    "train.log_every=1",
    "train.tensorboard=false",
    "train.progress=false",
    "method.queue_size=32",
    "views.*.crop.size=32",
    "model.width=0.125",
]


#: overrides that shrink any quick recipe (``densessl/recipes/quick``) to a few seconds' run,
#: with :data:`METHOD_TINY`'s for the method's own sizes
QUICK_TINY = [
    "data.synthetic_length=32",
    "data.workers=0",
    "train.batch_size=8",
    "train.epochs=1",
    "train.tensorboard=false",
    "train.progress=false",
    "views.*.crop.size=32",
    "model.width=0.125",
]
METHOD_TINY = {
    "mocov2": ["method.queue_size=16"],
    "densecl": ["method.queue_size=16"],
    "slotcon": ["method.num_prototypes=8", "method.hidden_dim=16"],
    # a one-block ViT; 48 px crops keep the 6x6 token grid its groupings need
    "mgc": ["model.depth=1", "method.hidden_dim=16", "views.*.crop.size=48"],
    "revisited_moco": ["method.queue_size=16", "method.knn_topk=4"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block, put back after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gloo_entry(rank: int, world: int, port: int, queue: Any, worker: Callable, args: tuple) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        queue.put((rank, worker(rank, world, *args)))
    finally:
        dist.destroy_process_group()


def run_in_gloo_processes(
    worker: Callable, *args: Any, world: int = 2, timeout: float = 120
) -> dict[int, Any]:
    """``worker(rank, world, *args)`` in ``world`` spawned processes joined in a gloo group, one
    thread each; returns ``{rank: what it returned}``.

    ``worker`` must be a module-level function, and what it returns plain data (numbers, numpy
    arrays): a tensor crosses processes as a shared-memory handle that dies with its process,
    which may exit before the parent reads it.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_gloo_entry, args=(r, world, port, queue, worker, args)) for r in range(world)
    ]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=timeout) for _ in range(world))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def sgd_losses(model: nn.Module, inputs: list[tuple[Views, Step]], lr: float) -> list[float]:
    """Train ``model`` (a method, or its DDP wrapper) with SGD on each ``(views, step)`` in turn;
    returns the losses, averaged over the processes of a gloo group when there is one."""
    import torch.distributed as dist

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for views, step in inputs:
        loss = model(views, step)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(value)
            value /= dist.get_world_size()
        losses.append(float(value))
    return losses

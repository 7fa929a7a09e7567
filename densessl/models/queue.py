"""The ring buffer of negative keys used by the MoCo family (MoCo-v2, DenseCL, revisited MoCo).

The InfoNCE against it lives in :mod:`densessl.models.infonce`; ``queue_infonce`` is importable
from here too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densessl.models.infonce import queue_infonce

__all__ = ["NegativeQueue", "queue_infonce"]


class NegativeQueue(nn.Module):
    """``size`` unit vectors of dimension ``dim``, stored row-wise as (size, dim).

    The references store (dim, size); rows make ``q @ queue.keys.T`` the negative logits. The
    buffer starts as normalised Gaussian noise, as in MoCo. ``push`` writes the (already
    gathered) keys at the pointer and wraps around, so the queue length need not be a multiple
    of the global batch. Keys and pointer are buffers: they are saved with the model and
    restored on resume.
    """

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> torch.Tensor:
        """Overwrite the oldest entries with ``keys`` (N, dim); returns the slots written."""
        n = keys.shape[0]
        if n > self.size:
            keys, n = keys[-self.size :], self.size
        start = int(self.ptr)
        index = (torch.arange(n, device=self.keys.device) + start) % self.size
        # out of place: this step's loss still needs the old entries for its backward pass
        self.keys = self.keys.index_copy(0, index, keys.detach().to(self.keys.dtype))
        self.ptr.fill_((start + n) % self.size)
        return index

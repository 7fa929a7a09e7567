"""Indicators of representation collapse, cheap enough to log during pre-training.

A contrastive run that is failing rarely shows it in its loss: the loss can fall while the
embeddings crowd into a few directions. Three numbers show it directly:

* :func:`channel_std`: the standard deviation over the batch of each channel of the
  L2-normalised embeddings, averaged over channels. Identical embeddings give 0; embeddings
  spread uniformly over the unit sphere of dimension D give about ``1 / sqrt(D)`` (SimSiam's
  collapse check).
* :func:`effective_rank`: ``exp`` of the entropy of the normalised singular values of the
  (centred) embeddings (Roy and Vetterli, 2007): 1 for embeddings along one direction, D for
  an orthonormal set of D vectors. Taken on the dense features (one row per location) it says
  how many directions the dense map really uses.
* :func:`mean_cosine`: the mean cosine similarity between two sets of vectors, computed from
  their means (``mean_i mean_j a_i . b_j = mean(a) . mean(b)``), so a whole queue costs one pass.
  A queue whose entries all point the same way is near 1; a healthy one near 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["channel_std", "dense_rows", "effective_rank", "mean_cosine"]


def channel_std(embeddings: torch.Tensor) -> float:
    """Mean over channels of the batch standard deviation of the L2-normalised ``(N, D)`` rows."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) embeddings, got shape {tuple(embeddings.shape)}")
    z = F.normalize(embeddings.detach().float(), dim=1)
    return float(z.std(dim=0).mean())


def effective_rank(embeddings: torch.Tensor, eps: float = 1e-12) -> float:
    """``exp(H(p))`` with ``p`` the singular values of the centred ``(N, D)`` rows over their sum."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) embeddings, got shape {tuple(embeddings.shape)}")
    z = embeddings.detach().float()
    z = z - z.mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(z)
    total = singular.sum()
    if total <= eps:
        return 1.0  # every row equal: one direction at most
    p = singular / total
    entropy = -(p * torch.log(p.clamp_min(eps))).sum()
    return float(entropy.exp())


def mean_cosine(a: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """Mean cosine similarity of every row of ``a`` with every row of ``b`` (``a`` itself when
    ``b`` is None; the mean then includes each row with itself)."""
    a = F.normalize(a.detach().float(), dim=1).mean(dim=0)
    b = a if b is None else F.normalize(b.detach().float(), dim=1).mean(dim=0)
    return float(a @ b)


def dense_rows(features: torch.Tensor, max_rows: int = 4096) -> torch.Tensor:
    """A dense map ``(B, C, H, W)`` as L2-normalised location rows ``(<= max_rows, C)``, taken at
    evenly spaced positions so that the SVD stays cheap on large batches."""
    rows = F.normalize(
        features.detach().float().flatten(2).transpose(1, 2).reshape(-1, features.shape[1]), dim=1
    )
    if rows.shape[0] > max_rows:
        rows = rows[torch.linspace(0, rows.shape[0] - 1, max_rows).long()]
    return rows

"""Collapse indicators of a training run, logged beside its losses (``metrics.jsonl``).

:class:`CollapseMonitor` watches the encoder the method exports, whatever the method: a forward
hook keeps that encoder's first output of each step (the dense map of a ResNet, the patch tokens
of a ViT), and at each logging step the indicators of :mod:`densessl.eval.collapse` are computed
from it and from the method's negative queues. Nothing is computed on the other steps, and the
hook only keeps a reference to a tensor the step computes anyway.

Logged keys: ``collapse_channel_std`` (pooled embeddings), ``collapse_dense_rank`` (effective
rank of the dense features, one row per location), ``collapse_queue_similarity`` (mean cosine
among the entries of each queue: ``..._<name>`` when a method keeps several).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from densessl.eval.collapse import channel_std, dense_rows, effective_rank, mean_cosine
from densessl.models.queue import NegativeQueue

__all__ = ["CollapseMonitor"]


class CollapseMonitor:
    """Collapse indicators of ``method`` (see the module docstring)."""

    def __init__(self, method: nn.Module) -> None:
        self._features: torch.Tensor | None = None
        self._hook = method.export_encoder().register_forward_hook(self._capture)
        self.queues = {name: m for name, m in method.named_modules() if isinstance(m, NegativeQueue)}

    def _capture(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._features is None and isinstance(output, torch.Tensor) and output.ndim in (3, 4):
            self._features = output.detach()

    def start_step(self) -> None:
        """Forget the previous step's features: the next forward of the encoder is this step's."""
        self._features = None

    def indicators(self) -> dict[str, float]:
        """The indicators of the last step (those it could compute: none before any forward)."""
        out: dict[str, float] = {}
        features = self._features
        if features is not None:
            # (B, C, H, W) map or (B, tokens, C) ViT output: locations as rows of C channels
            maps = features if features.ndim == 4 else features.transpose(1, 2).unsqueeze(-1)
            if maps.shape[0] >= 2:
                out["collapse_channel_std"] = channel_std(maps.float().mean(dim=(2, 3)))
            # 1024 rows keep the SVD to milliseconds on a GPU and well under a second on a CPU
            rows = dense_rows(maps, max_rows=1024)
            if rows.shape[0] >= 2:
                out["collapse_dense_rank"] = effective_rank(rows)
        for name, queue in self.queues.items():
            key = "collapse_queue_similarity" + (
                "" if len(self.queues) == 1 else "_" + name.replace(".", "_")
            )
            out[key] = mean_cosine(queue.keys)
        return out

    def close(self) -> None:
        self._hook.remove()

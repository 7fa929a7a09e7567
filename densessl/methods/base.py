"""What every method provides to the trainer (methods are found by name in :mod:`densessl.methods.registry`).

A method is an ``nn.Module`` built from its own config dataclass and a backbone factory. The
trainer calls ``forward(views, step)`` and minimises the returned ``"loss"``; every other entry
of the returned dict is logged. The trainer never names a method: it looks it up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

# the registry lived here; re-exported so that ``from densessl.methods.base import register`` still works
from densessl.methods.registry import METHODS, build_method, register  # noqa: F401
from densessl.models.backbones import Backbone


@dataclass
class Views:
    """One batch of augmented views and their geometry.

    ``images[v]`` is the normalised batch of view ``v`` (B, 3, H, W). ``boxes`` (B, V, 4) holds
    each crop's (left, top, width, height) in source-image pixels, ``flips`` (B, V) whether it
    was mirrored, ``image_sizes`` (B, 2) the source (height, width).
    """

    images: list[torch.Tensor]
    boxes: torch.Tensor
    flips: torch.Tensor
    image_sizes: torch.Tensor


@dataclass
class Step:
    """Where training stands, for schedules that live inside a method (teacher momentum).

    ``generator`` is seeded identically on every process for this step (shuffle-BN needs the
    same permutation everywhere).
    """

    step: int
    total_steps: int
    epoch: int
    generator: torch.Generator


BackboneFactory = Callable[[], Backbone]


class Method(nn.Module):
    """Base class: subclasses set ``name`` and ``config_class`` and implement the three hooks."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: how many views the data pipeline must deliver, at least
    min_views: ClassVar[int] = 2

    def forward(self, views: Views, step: Step) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    #: role -> dotted path of that backbone in the method: the ``query`` encoder is trained by
    #: gradient, the ``teacher`` (momentum / key encoder) follows it by EMA
    encoders: ClassVar[dict[str, str]] = {"query": "encoder_q.backbone", "teacher": "encoder_k.backbone"}
    #: the role handed to downstream tasks (spec 6.2: the query encoder, SlotCon's teacher)
    exported_role: ClassVar[str] = "query"

    def encoder(self, role: str) -> Backbone:
        """The backbone playing ``role`` (a key of :attr:`encoders`)."""
        if role not in self.encoders:
            raise KeyError(f"{self.name} has no '{role}' encoder; it has {', '.join(self.encoders)}")
        return self.get_submodule(self.encoders[role])

    def export_encoder(self) -> Backbone:
        """The backbone handed to downstream tasks."""
        return self.encoder(self.exported_role)

    @property
    def has_prototypes(self) -> bool:
        """Whether :meth:`prototype_scores` is implemented."""
        return type(self).prototype_scores is not Method.prototype_scores

    def prototype_scores(self, images: torch.Tensor) -> torch.Tensor | None:
        """Cosine scores (B, K, h, w) of the exported branch's dense embeddings against the
        method's learned prototypes, or ``None`` for a method without prototypes."""
        return None

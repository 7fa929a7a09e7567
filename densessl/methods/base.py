"""What every method provides to the trainer (methods are found by name in :mod:`densessl.methods.registry`).

A method is an ``nn.Module`` built from its own config dataclass and a backbone factory. The
trainer calls ``forward(views, step)`` and minimises the returned ``"loss"``; every other entry
of the returned dict is logged. The trainer never names a method: it looks it up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

# the registry lived here; re-exported so that ``from densessl.methods.base import register`` still works
from densessl.methods.registry import METHODS, build_method, register  # noqa: F401
from densessl.models.backbones import Backbone
from densessl.models.momentum import MomentumSchedule, momentum_at


@dataclass
class Views:
    """One batch of augmented views, their geometry and the method's per-sample targets.

    ``images[v]`` is the normalised batch of view ``v`` (B, 3, H, W); views of different sizes
    are separate batches. ``boxes`` (B, V, 4) holds each crop's (left, top, width, height) in
    source-image pixels, ``flips`` (B, V) whether it was mirrored, ``image_sizes`` (B, 2) the
    source (height, width), ``accepted`` (B, V) whether a constrained crop met its constraint
    (False: it fell back to an unconstrained draw), ``references[v]`` the view that view ``v`` is
    constrained to (None: free). ``targets`` holds what :meth:`Method.view_targets` computed for
    each sample in the loader workers, stacked over the batch.
    """

    images: list[torch.Tensor]
    boxes: torch.Tensor
    flips: torch.Tensor
    image_sizes: torch.Tensor
    accepted: torch.Tensor | None = None
    references: tuple[int | None, ...] = ()
    targets: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ViewRole:
    """What a method expects of one view of its recipe.

    ``reference``: the role this view must be constrained to (its crop drawn to overlap that
    view's crop, by ``rule`` when given). ``repeat``: the role may appear once or more (the last
    role only: small crops).
    """

    name: str
    reference: str | None = None
    rule: str | None = None
    repeat: bool = False


@dataclass
class Step:
    """Where training stands, for schedules that live inside a method (teacher momentum).

    ``generator`` is seeded identically on every process for this step (shuffle-BN needs the
    same permutation everywhere). ``momentum`` is this step's teacher momentum as the trainer's
    schedule gives it (None outside the trainer: :meth:`Method.momentum_for` then evaluates the
    method's own :meth:`Method.teacher_momentum` schedule at this step).
    """

    step: int
    total_steps: int
    epoch: int
    generator: torch.Generator
    momentum: float | None = None


#: builds the configured backbone; keyword arguments override model config fields (a teacher
#: built with ``drop_path_rate=0.0``)
BackboneFactory = Callable[..., Backbone]
#: per-sample targets from view records: ``fn(records, (height, width)) -> {name: tensor}``
ViewTargets = Callable[[list[Any], tuple[int, int]], dict[str, torch.Tensor]]


class Method(nn.Module):
    """Base class: subclasses set ``name`` and ``config_class`` and implement the three hooks."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: how many views the data pipeline must deliver, at least
    min_views: ClassVar[int] = 2
    #: the views the method reads, in recipe order (checked at start-up by :meth:`check_views`)
    view_roles: ClassVar[tuple[ViewRole, ...]] = (ViewRole("query"), ViewRole("key"))

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

    #: state-dict key prefixes of large buffers that only exact resume needs (a feature queue of
    #: hundreds of MiB): ``last.pt`` keeps them, epoch copies leave them out (see
    #: :meth:`checkpoint_state`); exports never carry them, they take one encoder only
    light_state_exclude: ClassVar[tuple[str, ...]] = ()

    def checkpoint_state(self, light: bool = False) -> dict[str, torch.Tensor]:
        """The state to checkpoint: everything, or without :attr:`light_state_exclude` when
        ``light``. A run resumed from a light state starts those buffers afresh (not exact)."""
        state = self.state_dict()
        if light:
            state = {k: v for k, v in state.items() if not k.startswith(self.light_state_exclude)}
        return state

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load :meth:`checkpoint_state` output; returns the excluded keys a light state lacked
        (kept at their current values). Any other missing or unexpected key is an error."""
        expected = set(self.state_dict())
        missing = sorted(expected - set(state))
        left_out = [k for k in missing if k.startswith(self.light_state_exclude)]
        if len(left_out) != len(missing) or set(state) - expected:
            self.load_state_dict(state, strict=True)  # raises, naming the keys
        self.load_state_dict(state, strict=not left_out)
        return left_out

    def teacher_momentum(self) -> MomentumSchedule | None:
        """The schedule of the EMA teacher's momentum, which the trainer's
        :class:`~densessl.training.optim.Schedule` evaluates at every step; None without a teacher."""
        return None

    def momentum_for(self, step: Step) -> float:
        """This step's teacher momentum: the trainer's value, or the method's schedule at ``step``."""
        if step.momentum is not None:
            return step.momentum
        schedule = self.teacher_momentum()
        if schedule is None:
            raise ValueError(f"{self.name} declares no teacher momentum schedule")
        # a Step made outside the trainer knows no epoch length: evaluated per iteration
        return momentum_at(schedule.kind, schedule.base, step.step, step.total_steps)

    def param_groups(self) -> list[dict[str, Any]] | None:
        """Parameter groups for the optimiser, each ``{"params": [...], "lr_scale": s,
        "wd_scale": w}`` (no decay on norms and biases, a slower head...), or None for one group
        of every trainable parameter. The trainer's schedule multiplies its lr and weight decay
        by each group's scales at every step."""
        return None

    @classmethod
    def check_views(cls, crops: list[Any]) -> None:
        """Raise :class:`~densessl.errors.ConfigError` with one line when a recipe's crop specs
        (``views.N.crop``) do not play :attr:`view_roles`."""
        from densessl.errors import ConfigError

        roles = list(cls.view_roles)
        names = ", ".join(r.name + ("..." if r.repeat else "") for r in roles)
        repeat = bool(roles) and roles[-1].repeat
        if len(crops) < len(roles) or (len(crops) > len(roles) and not repeat):
            expected = f"at least {len(roles)}" if repeat else str(len(roles))
            raise ConfigError(
                f"views: {cls.name} reads {expected} views ({names}); the recipe has {len(crops)}"
            )
        played = [roles[min(i, len(roles) - 1)] for i in range(len(crops))]
        first_index = {}
        for i, role in enumerate(played):
            first_index.setdefault(role.name, i)
        for i, (role, crop) in enumerate(zip(played, crops, strict=True)):
            want = first_index[role.reference] if role.reference is not None else None
            if crop.reference != want:
                must = (
                    f"must be {want} ({role.name} is drawn to overlap {role.reference})"
                    if want is not None
                    else (f"must be unset ({role.name} is drawn freely)")
                )
                raise ConfigError(f"views.{i}.crop.reference {must} for {cls.name}, got {crop.reference}")
            if want is not None and role.rule is not None and crop.rule != role.rule:
                raise ConfigError(
                    f"views.{i}.crop.rule must be {role.rule!r} for {cls.name}'s {role.name}, "
                    f"got {crop.rule!r}"
                )

    @classmethod
    def view_targets(cls, config: Any) -> ViewTargets | None:
        """A picklable function computing per-sample targets from one sample's view records,
        run in the loader workers (for example MGC's corresponding token pairs), or None.

        ``config`` is the whole :class:`~densessl.config.ExperimentConfig` (the targets may depend
        on the crops and the backbone's patch size, not only on ``config.method``); a recipe the
        targets cannot be built for raises :class:`~densessl.errors.ConfigError`.

        It is called as ``fn(records, image_size)`` with the sample's list of
        :class:`~densessl.views.geometry.ViewRecord` and its source ``(height, width)``, and returns
        tensors of the same shape for every sample; they reach :attr:`Views.targets` stacked.
        """
        return None

    @property
    def has_prototypes(self) -> bool:
        """Whether :meth:`prototype_scores` is implemented."""
        return type(self).prototype_scores is not Method.prototype_scores

    def prototype_scores(self, images: torch.Tensor) -> torch.Tensor | None:
        """Cosine scores (B, K, h, w) of the exported branch's dense embeddings against the
        method's learned prototypes, or ``None`` for a method without prototypes."""
        return None

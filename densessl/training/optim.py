"""Optimisers (SGD, LARS, AdamW), learning-rate schedules and gradient clipping."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from densessl.config import OptimConfig
from densessl.models.momentum import MomentumSchedule, momentum_at


class LARS(torch.optim.Optimizer):
    """LARS as SlotCon uses it (the Barlow Twins variant).

    For a parameter in an adapted group: g <- g + wd * p, then g <- g * eta * ||p|| / ||g|| when
    both norms are positive; momentum buffer mu <- momentum * mu + g; p <- p - lr * mu. Groups
    with ``lars_adapt=False`` (1-D parameters: biases, norm affines) skip decay and adaptation.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "eta": eta,
            "lars_adapt": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["lars_adapt"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.norm(p), torch.norm(grad)
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, torch.ones_like(p_norm)
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(grad)
                p.add_(mu, alpha=-group["lr"])
        return loss


def _groups(model_or_groups: nn.Module | list[dict]) -> list[dict]:
    """Parameter groups with their scales; a module gives one group of its trainable parameters."""
    if isinstance(model_or_groups, nn.Module):
        model_or_groups = [{"params": list(model_or_groups.parameters())}]
    groups = []
    for group in model_or_groups:
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            scales = {"lr_scale": group.get("lr_scale", 1.0), "wd_scale": group.get("wd_scale", 1.0)}
            groups.append({**group, "params": params, **scales})
    return groups


def build_optimizer(model_or_groups: nn.Module | list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimiser over a module's trainable parameters, or over parameter groups
    (``{"params": [...], "lr_scale": s, "wd_scale": w}``, as :meth:`Method.param_groups` gives).

    Each group keeps its scales; :class:`Schedule` multiplies the scheduled lr and weight decay by
    them at every step.
    """
    groups = _groups(model_or_groups)
    for group in groups:
        group["weight_decay"] = config.weight_decay * group["wd_scale"]
    if config.name == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.name == "lars":
        if config.lars_exclude_1d:
            # 1-D parameters (biases, norm affines): neither decay nor adaptation
            split = []
            for group in groups:
                matrices = [p for p in group["params"] if p.ndim > 1]
                vectors = [p for p in group["params"] if p.ndim <= 1]
                split.append({**group, "params": matrices})
                split.append(
                    {**group, "params": vectors, "lars_adapt": False, "wd_scale": 0.0, "weight_decay": 0.0}
                )
            groups = [g for g in split if g["params"]]
        return LARS(
            groups,
            lr=config.lr,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            eta=config.lars_eta,
        )
    raise ValueError(f"unknown optimizer '{config.name}'")


class Schedule:
    """Every value that moves during training, at every step: learning rate and weight decay
    (written into each parameter group times its ``lr_scale`` / ``wd_scale``) and the teacher
    momentum (handed to the method through :class:`~densessl.methods.base.Step`).

    The lr follows :func:`lr_at`. The weight decay is constant, or, with
    ``optim.weight_decay_end``, a cosine from ``weight_decay`` to it over the whole run (DINO,
    MGC), changing per iteration or per epoch like the lr. The momentum follows the method's
    :class:`~densessl.models.momentum.MomentumSchedule`, per iteration or per epoch.
    """

    def __init__(self, config: OptimConfig, steps_per_epoch: int, epochs: float) -> None:
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs

    def lr(self, step: int) -> float:
        return lr_at(self.config, step, self.steps_per_epoch, self.epochs)

    def weight_decay(self, step: int) -> float:
        cfg = self.config
        end = cfg.weight_decay_end
        if end is None:
            return cfg.weight_decay
        per_epoch = cfg.schedule_unit == "epoch"
        position = float(step // self.steps_per_epoch) if per_epoch else step / self.steps_per_epoch
        progress = min(max(position / max(self.epochs, 1e-12), 0.0), 1.0)
        return end + (cfg.weight_decay - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def momentum(self, step: int, schedule: MomentumSchedule) -> float:
        total = round(self.steps_per_epoch * self.epochs)
        if schedule.unit == "epoch":
            step -= step % self.steps_per_epoch
        return momentum_at(schedule.kind, schedule.base, step, total)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Write this step's values into ``optimizer``; returns the base lr."""
        lr, decay = self.lr(step), self.weight_decay(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            group["weight_decay"] = decay * group.get("wd_scale", 1.0)
        return lr


def lr_at(config: OptimConfig, step: int, steps_per_epoch: int, epochs: float) -> float:
    """Learning rate for global iteration ``step``.

    Warm-up is linear, from ``lr * warmup_start_factor`` to ``lr`` over ``warmup_epochs``
    (counted in iterations, or in whole epochs when the schedule is per epoch). The main schedule
    then runs over the remaining time: cosine from ``lr`` to ``min_lr``, constant, or x0.1 at
    each milestone epoch. With ``schedule_unit=epoch`` the value only changes at epoch starts.
    """
    per_epoch = config.schedule_unit == "epoch"
    position = float(step // steps_per_epoch) if per_epoch else step / steps_per_epoch
    warmup = float(math.floor(config.warmup_epochs)) if per_epoch else config.warmup_epochs
    if position < warmup:
        start = config.lr * config.warmup_start_factor
        return start + (config.lr - start) * position / warmup
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        epoch = int(position)
        return config.lr * 0.1 ** sum(epoch >= m for m in config.milestones)
    progress = (position - warmup) / max(epochs - warmup, 1e-12)
    progress = min(max(progress, 0.0), 1.0)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def gradient_norm(parameters: list[nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the parameters' gradients, as a tensor on their device (no host sync)."""
    grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def clip_gradients(model: nn.Module, config: OptimConfig) -> torch.Tensor:
    """Clip as configured; returns the global gradient norm before any clipping, clipped or not:
    the trainer logs it (``grad_norm``), as a run about to diverge shows it first."""
    params = [p for p in model.parameters() if p.grad is not None]
    if config.clip_grad is not None and config.clip_mode == "global":
        return torch.nn.utils.clip_grad_norm_(params, config.clip_grad).detach()
    norm = gradient_norm(params)
    if config.clip_grad is not None:
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], config.clip_grad)
    return norm

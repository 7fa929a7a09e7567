"""Typed experiment configuration: YAML recipe + ``key.sub=value`` overrides -> dataclasses.

Every section is a dataclass; the ``method`` section's class is chosen by ``method.name`` from
the method registry, so each method declares its own hyper-parameters. Loading is strict: an
unknown key or a value of the wrong type stops with one line that names the key and what is
accepted. (A small hand-written converter rather than OmegaConf: it can list valid keys and
choices in the message, and resolve the method section by name.)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from densessl.augment import PhotometricConfig
from densessl.methods import METHODS
from densessl.views.sampler import CropSpec


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message is meant for the user as is."""


@dataclass
class ModelConfig:
    arch: Literal["resnet18", "resnet34", "resnet50", "resnet101", "vit_tiny", "vit_small", "vit_base"] = (
        "resnet50"
    )
    #: ResNet: 3x3 stride-1 stem without max-pool: output stride 8 for 64-96 px images
    small_input: bool = False
    #: ResNet: channel multiplier of every stage (1.0 = torchvision's widths)
    width: float = 1.0
    #: ResNet: zero-initialised last BN gamma of each residual block
    zero_init_residual: bool = False
    #: ViT: patch size, and the image size its position table is laid out for
    patch_size: int = 16
    img_size: int = 224
    #: ViT: attention heads (None: timm's default for the width; MGC's ViT-S uses 8)
    num_heads: int | None = None
    #: ViT: stochastic depth of the trained network
    drop_path_rate: float = 0.0


@dataclass
class DataConfig:
    #: ``folder:/path``, ``coco:/path`` (train2017), ``coco+:/path`` (+ unlabeled2017), ``synthetic[:preset]``
    source: str = "synthetic"
    #: images per epoch when the source is synthetic (they are generated on the fly)
    synthetic_length: int = 10000
    #: what an unreadable image does: ``skip`` (warn once, count, take the next image) or ``error``
    corrupt: Literal["skip", "error"] = "skip"
    workers: int = 4


@dataclass
class ViewConfig:
    crop: CropSpec = field(default_factory=lambda: CropSpec(size=224))
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)


@dataclass
class OptimConfig:
    name: Literal["sgd", "lars", "adamw"] = "sgd"
    #: learning rate for the configured global batch (no implicit scaling)
    lr: float = 0.03
    weight_decay: float = 1e-4
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    #: LARS trust coefficient; 1-D parameters get neither decay nor adaptation when excluded
    lars_eta: float = 0.001
    lars_exclude_1d: bool = True
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    #: ``epoch``: the lr changes once per epoch (MoCo, DenseCL); ``iteration``: every step
    schedule_unit: Literal["epoch", "iteration"] = "epoch"
    min_lr: float = 0.0
    milestones: list[int] = field(default_factory=list)
    warmup_epochs: float = 0.0
    #: warm-up starts at lr * this factor (SlotCon: 0.01, MGC: 0.0)
    warmup_start_factor: float = 0.0
    #: gradient clipping threshold; ``global`` norm or each parameter's own norm (DINO/MGC)
    clip_grad: float | None = None
    clip_mode: Literal["global", "per_parameter"] = "global"


@dataclass
class TrainConfig:
    epochs: int = 200
    #: global batch: divided by the number of processes
    batch_size: int = 256
    seed: int = 0
    #: ``auto`` = bf16 autocast on GPUs that support it, fp32 elsewhere
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    sync_bn: bool = False
    checkpoint_every: int = 10
    #: also checkpoint every N steps (0 = only at epoch ends)
    checkpoint_every_steps: int = 0
    log_every: int = 10
    tensorboard: bool = True
    #: stop after this many steps in total (0 = run all epochs); schedules still span all epochs
    max_steps: int = 0
    progress: bool = True


@dataclass
class ExperimentConfig:
    method: Any
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    views: list[ViewConfig] = field(default_factory=lambda: [ViewConfig(), ViewConfig()])
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------------------------
# dict -> dataclass conversion with clear errors


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{key}: invalid value {value!r}; valid choices: {', '.join(map(str, choices))}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_convert(v, args[0], f"{key}.{i}") for i, v in enumerate(value))
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} elements, got {value!r}")
            return tuple(
                _convert(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        return [_convert(v, args[0] if args else Any, f"{key}.{i}") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            where = f" in {prefix}" if prefix else ""
            raise ConfigError(f"unknown key '{_join(prefix, key)}'{where}; valid keys: {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], _join(prefix, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from exc


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from plain data, validating every key and type."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a mapping at the top level")
    data = dict(data)
    method_data = data.pop("method", None)
    if not isinstance(method_data, dict) or "name" not in method_data:
        raise ConfigError(f"method.name is required; valid choices: {', '.join(sorted(METHODS))}")
    name = method_data["name"]
    if name not in METHODS:
        raise ConfigError(f"method.name: invalid value {name!r}; valid choices: {', '.join(sorted(METHODS))}")
    method = _build(METHODS[name].config_class, method_data, "method")
    config = _build(ExperimentConfig, {**data, "method": {}}, "")
    config.method = method
    _check(config)
    return config


def _check(config: ExperimentConfig) -> None:
    min_views = METHODS[config.method.name].min_views
    if len(config.views) < min_views:
        raise ConfigError(f"views: method {config.method.name} needs at least {min_views} views")
    if config.train.batch_size < 1 or config.train.epochs < 1:
        raise ConfigError("train.batch_size and train.epochs must be positive")
    for i, view in enumerate(config.views):
        ref = view.crop.reference
        if ref is not None and not 0 <= ref < i:
            raise ConfigError(f"views.{i}.crop.reference must name an earlier view (0..{i - 1}), got {ref}")


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain data (lists for tuples), ready for YAML or a checkpoint."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


# ----------------------------------------------------------------------------------------------
# files and overrides


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) in place. ``views.*.x=v`` sets every view;
    list elements are addressed by index (``views.1.crop.size=96``)."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' must look like key.sub=value")
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r} ({exc})") from exc
    _set(data, key.strip().split("."), value, key)


def _set(node: Any, parts: list[str], value: Any, full: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if head == "*":
            targets = list(range(len(node)))
        elif head.isdigit() and int(head) < len(node):
            targets = [int(head)]
        else:
            raise ConfigError(f"override {full}: '{head}' is not an index of a list of {len(node)} items")
        for i in targets:
            if rest:
                _set(node[i], rest, value, full)
            else:
                node[i] = value
        return
    if not isinstance(node, dict):
        raise ConfigError(f"override {full}: '{head}' is below a value that is not a mapping")
    if not rest:
        node[head] = value
        return
    if head not in node or node[head] is None:
        node[head] = {}
    _set(node[head], rest, value, full)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML recipe, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    for override in overrides or []:
        apply_override(data, override)
    return from_dict(data)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

"""Typed experiment configuration: YAML recipe + ``key.sub=value`` overrides -> dataclasses.

Every section is a dataclass; the ``method`` section's class is chosen by ``method.name`` from
the method registry, so each method declares its own hyper-parameters. Loading is strict: an
unknown key, a value of the wrong type or out of range stops with one line that names the key
and what is accepted (with a "did you mean" for a misspelt key or choice). (A small hand-written
converter rather than OmegaConf: it can list valid keys and choices in the message, and resolve
the method section by name.)

A recipe is a file path or the name of a recipe shipped in :mod:`densessl.recipes`
(``densecl/coco_r50_800ep``). A recipe may start from another one with ``base: NAME_OR_PATH``
(a path is relative to the file that names it); its own keys are merged into the base's
recursively: mappings merge key by key, any other value (lists included) replaces the base's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from densessl.augment import PhotometricConfig, PhotometricPipeline, check_pipeline
from densessl.errors import ConfigError
from densessl.methods.registry import method_names, method_spec
from densessl.recipes import recipe_names, recipe_path
from densessl.views.spec import CropSpec


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
    #: ResNet: how the convolutions' filters are drawn (``orthogonal``: an orthonormal set per layer)
    conv_init: Literal["kaiming", "orthogonal"] = "kaiming"
    #: ViT: patch size, and the image size its position table is laid out for
    patch_size: int = 16
    img_size: int = 224
    #: ViT: attention heads (None: timm's default for the width; MGC's ViT-S uses 8)
    num_heads: int | None = None
    #: ViT: stochastic depth of the trained network
    drop_path_rate: float = 0.0
    #: ViT: number of transformer blocks (None: the architecture's 12; fewer for CPU recipes)
    depth: int | None = None

    def backbone_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The keyword arguments of :func:`densessl.models.backbones.build_backbone` this section
        describes, with ``overrides`` (a teacher's ``drop_path_rate=0.0``) replacing fields."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"not a model field: {', '.join(unknown)}")
        # every field is a builder argument: a field that is not must be left out here
        return {**dataclasses.asdict(self), **overrides}


@dataclass
class DataConfig:
    #: ``folder:/path``, ``coco:/path`` (train2017), ``coco+:/path`` (+ unlabeled2017), ``synthetic[:preset]``
    source: str = "synthetic"
    #: images per epoch when the source is synthetic (they are generated on the fly)
    synthetic_length: int = 10000
    #: what an unreadable image does: ``skip`` (warn once, count, take the next image) or ``error``
    corrupt: Literal["skip", "error"] = "skip"
    #: under ``corrupt=skip``: the run stops when more than this fraction of the images read
    #: so far were unreadable (a broken folder, not a stray bad file)
    max_skipped_fraction: float = 0.1
    #: where images are decoded: ``cpu`` (loader workers; JPEGs by libjpeg-turbo, at 1/2-1/8
    #: size when every crop allows it), ``gpu`` (workers read the bytes and draw the boxes; the
    #: training device decodes JPEGs, nvjpeg on CUDA, and crops them) or ``auto`` (``gpu`` when
    #: training on CUDA, ``cpu`` otherwise)
    decode: Literal["cpu", "gpu", "auto"] = "auto"
    workers: int = 4


@dataclass
class ViewConfig:
    crop: CropSpec = field(default_factory=lambda: CropSpec(size=224))
    #: a colour step, ``{autoaugment: imagenet}``, ``{choice: [...], p: [...]}`` or a list of them
    photometric: PhotometricPipeline = field(default_factory=PhotometricConfig)


@dataclass
class OptimConfig:
    name: Literal["sgd", "lars", "adamw"] = "sgd"
    #: learning rate for the configured global batch (no implicit scaling)
    lr: float = 0.03
    weight_decay: float = 1e-4
    #: cosine weight-decay schedule from ``weight_decay`` to this value over the run (DINO, MGC);
    #: None keeps it constant
    weight_decay_end: float | None = None
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


#: the labelled sets ``train.probe.data`` may name (``kind:ROOT``; ``synthetic[:preset]`` needs no root)
PROBE_DATA_KINDS = ("synthetic", "voc", "leopart-voc", "ade20k", "cityscapes", "cocostuff")


@dataclass
class ProbeConfig:
    """The online dense probe (:mod:`densessl.training.probe`): the exported encoder, frozen,
    scored every few epochs by nearest-neighbour retrieval and a linear probe, as ``densessl eval
    seg-nn`` and ``seg-probe`` score it."""

    #: the labelled set, as ``--data`` of ``densessl eval seg-nn``: ``synthetic[:preset]``, ``voc:ROOT``, ...
    data: str = "synthetic"
    #: probe at the end of every N-th epoch (0 = never)
    every_epochs: int = 0
    #: labelled images per split: the first N of the training split (the retrieval memory and the
    #: linear probe's training set) and the first N of the validation split (scored)
    images: int = 300
    #: input side (None: the data set's, 448 for photographs, the scenes' own size for synthetic)
    image_size: int | None = None
    #: epochs of the linear probe (one seed); 0 = retrieval only
    linear_epochs: int = 5
    #: the probes' wall time stays under this share of the training time (0 = no limit): a probe
    #: that would overrun it runs on fewer images, or is skipped
    max_time_share: float = 0.05


@dataclass
class TrainConfig:
    epochs: int = 200
    #: global batch: divided by the number of processes
    batch_size: int = 256
    seed: int = 0
    #: the seed of the initial weights alone (unset: ``seed``), so that the spread over seeds can be
    #: split into what the initial weights and what the data order and augmentations cause
    init_seed: int | None = None
    #: ``auto`` = bf16 autocast on GPUs that support it, fp32 elsewhere
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    #: compile every backbone of the method with torch.compile (student, teacher, ...) in place:
    #: state-dict names, checkpoints and exports are unchanged. ``compile_backend``: torch.compile's
    #: backend (``inductor``; ``eager`` only traces, for checking a model compiles)
    compile: bool = False
    compile_backend: str = "inductor"
    sync_bn: bool = False
    checkpoint_every: int = 10
    #: also checkpoint every N steps (0 = only at epoch ends)
    checkpoint_every_steps: int = 0
    log_every: int = 10
    tensorboard: bool = True
    #: the run's length in optimisation steps instead of ``epochs`` whole epochs (unset: epochs x
    #: steps per epoch): every schedule spans these steps and the last epoch ends part-way, for a
    #: budget that is not a whole number of epochs (``densessl compare`` at equal compute)
    steps: int | None = None
    #: stop after this many steps in total (0 = run to the end); schedules still span the whole run
    #: (``epochs``, or ``steps``)
    max_steps: int = 0
    progress: bool = True
    #: seconds a process waits for its peers in a collective before the job stops with an error
    #: (a hung or stopped process); multi-process runs only
    collective_timeout_s: float = 600.0
    #: intra-op CPU threads of a single-process run; 0 = chosen from the cores and data.workers
    #: (densessl.runtime.choose_cpu_threads); OMP_NUM_THREADS, when set, wins over both
    cpu_threads: int = 0
    #: the online dense probe (off unless ``every_epochs`` is set)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


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


def did_you_mean(word: str, candidates: list[str] | tuple[Any, ...]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate to a misspelt ``word``, else ``""``."""
    names = [str(c) for c in candidates]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _field_names(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


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
                f"{key}: invalid value {value!r}{did_you_mean(value, choices)}; "
                f"valid choices: {', '.join(map(str, choices))}"
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
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(sections) > 1:
            # a mapping meant for one of several sections: the error of the one sharing most keys
            _convert(value, max(sections, key=lambda a: len(value.keys() & _field_names(a))), key)
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
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, which reads 1e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
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
            raise ConfigError(
                f"unknown key '{_join(prefix, key)}'{where}{did_you_mean(key, names)}; "
                f"valid keys: {', '.join(names)}"
            )
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
    names = method_names()
    if not isinstance(method_data, dict) or "name" not in method_data:
        raise ConfigError(f"method.name is required; valid choices: {', '.join(names)}")
    name = method_data["name"]
    if name not in names:
        raise ConfigError(
            f"method.name: invalid value {name!r}{did_you_mean(name, names)}; "
            f"valid choices: {', '.join(names)}"
        )
    method = _build(method_spec(name).config_class, method_data, "method")
    config = _build(ExperimentConfig, {**data, "method": {}}, "")
    config.method = method
    _check(config)
    return config


# ----------------------------------------------------------------------------------------------
# value ranges: checked at start-up so a bad value stops the run before any work, in one line


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def _require(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Stop unless ``low <= value <= high`` (open ends exclusive); None (an unset option) passes."""
    if value is None:
        return
    ok = (low is None or (value > low if low_open else value >= low)) and (
        high is None or (value < high if high_open else value <= high)
    )
    if not ok:
        kind = "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a number"
        accepted = _range_text(low, high, low_open, high_open)
        raise ConfigError(f"{key} must be {kind} {accepted}, got {value!r}")


def _require_pair(
    key: str, pair: tuple[float, float], low: float, high: float | None, low_open: bool
) -> None:
    """A (min, max) range: both ends in range and min <= max."""
    for i, v in enumerate(pair):
        _require(f"{key}.{i}", v, low, high, low_open=low_open)
    if pair[0] > pair[1]:
        raise ConfigError(f"{key} must be [min, max] with min <= max, got {list(pair)}")


def _check_finite(node: Any, key: str) -> None:
    """YAML reads ``.nan`` and ``.inf`` as floats; no setting of a recipe accepts them."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            _check_finite(getattr(node, f.name), _join(key, f.name))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            _check_finite(v, f"{key}.{i}")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{key} must be a finite number, got {node!r}")


def _check_method(method: Any) -> None:
    """Rules by field name, so every method's dataclass is covered without a list per method:
    temperatures > 0; momenta, loss weights and probabilities in [0, 1]; sizes and counts >= 1.
    A method config may add its own ``validate()`` (raising ValueError with the message)."""
    for f in dataclasses.fields(method):
        key, value = f"method.{f.name}", getattr(method, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = f.name.lower()
        if "temp" in name:
            _require(key, value, 0, low_open=True)
        elif "momentum" in name or "weight" in name or "lambda" in name or name.endswith("_p"):
            _require(key, value, 0, 1)
        elif isinstance(value, int) and "seed" not in name:
            # counts of epochs may be 0 (a warm-up that is off); sizes and counts of items may not
            _require(key, value, 0 if name.endswith("_epochs") else 1)
    validate = getattr(method, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"method: {exc}") from exc


def _check(config: ExperimentConfig) -> None:
    _check_finite(config, "")
    min_views = method_spec(config.method.name).min_views
    if len(config.views) < min_views:
        raise ConfigError(f"views: method {config.method.name} needs at least {min_views} views")
    _check_method(config.method)

    model = config.model
    _require("model.width", model.width, 0, low_open=True)
    _require("model.patch_size", model.patch_size, 1)
    _require("model.img_size", model.img_size, 1)
    _require("model.num_heads", model.num_heads, 1)
    _require("model.depth", model.depth, 1)
    _require("model.drop_path_rate", model.drop_path_rate, 0, 1, high_open=True)

    data = config.data
    _require("data.synthetic_length", data.synthetic_length, 1)
    _require("data.workers", data.workers, 0)
    _require("data.max_skipped_fraction", data.max_skipped_fraction, 0, 1, high_open=True)

    for i, view in enumerate(config.views):
        crop, key = view.crop, f"views.{i}"
        ref = crop.reference
        if ref is not None and not 0 <= ref < i:
            raise ConfigError(f"{key}.crop.reference must name an earlier view (0..{i - 1}), got {ref}")
        _require(f"{key}.crop.size", crop.size, 1)
        _require_pair(f"{key}.crop.scale", crop.scale, 0, 1, low_open=True)
        _require_pair(f"{key}.crop.ratio", crop.ratio, 0, None, low_open=True)
        _require(f"{key}.crop.flip_p", crop.flip_p, 0, 1)
        _require(f"{key}.crop.threshold", crop.threshold, 0, 1)
        _require(f"{key}.crop.tries", crop.tries, 1)
        if crop.tries is None and ref is None:
            raise ConfigError(f"{key}.crop.tries: null (retry until accepted) needs a crop.reference")
        try:
            colour_steps = check_pipeline(view.photometric, f"{key}.photometric")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        for where, photo in colour_steps:
            for name in ("jitter_p", "grayscale_p", "blur_p", "solarize_p", "solarize_threshold"):
                _require(f"{where}.{name}", getattr(photo, name), 0, 1)
            for name in ("brightness", "contrast", "saturation"):
                _require(f"{where}.{name}", getattr(photo, name), 0)
            _require(f"{where}.hue", photo.hue, 0, 0.5)
            _require_pair(f"{where}.blur_sigma", photo.blur_sigma, 0, None, low_open=True)
            _require(f"{where}.blur_sigma_scale", photo.blur_sigma_scale, 0, low_open=True)

    optim = config.optim
    _require("optim.lr", optim.lr, 0, low_open=True)
    _require("optim.weight_decay", optim.weight_decay, 0)
    if optim.weight_decay_end is not None:
        _require("optim.weight_decay_end", optim.weight_decay_end, 0)
    _require("optim.momentum", optim.momentum, 0, 1)
    for i, beta in enumerate(optim.betas):
        _require(f"optim.betas.{i}", beta, 0, 1, high_open=True)
    _require("optim.lars_eta", optim.lars_eta, 0, low_open=True)
    _require("optim.min_lr", optim.min_lr, 0, optim.lr)
    # a warm-up or milestone beyond the last epoch is allowed: a recipe shortened by an override
    # (train.epochs=2 for a smoke test) keeps its schedule's shape
    _require("optim.warmup_epochs", optim.warmup_epochs, 0)
    _require("optim.warmup_start_factor", optim.warmup_start_factor, 0, 1)
    _require("optim.clip_grad", optim.clip_grad, 0, low_open=True)
    for i, milestone in enumerate(optim.milestones):
        _require(f"optim.milestones.{i}", milestone, 1)
    if list(optim.milestones) != sorted(optim.milestones):
        raise ConfigError(f"optim.milestones must be in increasing order, got {optim.milestones}")

    train = config.train
    _require("train.epochs", train.epochs, 1)
    if train.steps is not None:
        _require("train.steps", train.steps, 1)
    _require("train.batch_size", train.batch_size, 1)
    _require("train.checkpoint_every", train.checkpoint_every, 1)
    _require("train.checkpoint_every_steps", train.checkpoint_every_steps, 0)
    _require("train.log_every", train.log_every, 1)
    _require("train.max_steps", train.max_steps, 0)
    _require("train.cpu_threads", train.cpu_threads, 0)
    _require("train.collective_timeout_s", getattr(train, "collective_timeout_s", None), 0, low_open=True)
    _check_probe(train.probe)


def _check_probe(probe: ProbeConfig) -> None:
    _require("train.probe.every_epochs", probe.every_epochs, 0)
    _require("train.probe.images", probe.images, 1)
    _require("train.probe.image_size", probe.image_size, 1)
    _require("train.probe.linear_epochs", probe.linear_epochs, 0)
    _require("train.probe.max_time_share", probe.max_time_share, 0, 1)
    kind, _, root = probe.data.partition(":")
    if kind not in PROBE_DATA_KINDS:
        raise ConfigError(
            f"train.probe.data: unknown data set {probe.data!r}{did_you_mean(kind, PROBE_DATA_KINDS)}; "
            f"expected synthetic[:preset] or KIND:ROOT with KIND one of {', '.join(PROBE_DATA_KINDS[1:])}"
        )
    if kind == "synthetic" and root:
        from densessl.data.synthetic import PRESETS

        if root not in PRESETS:
            raise ConfigError(
                f"train.probe.data: unknown synthetic preset {root!r}{did_you_mean(root, list(PRESETS))}; "
                f"valid presets: {', '.join(PRESETS)}"
            )
    if kind != "synthetic" and not root.strip():
        raise ConfigError(f"train.probe.data: {kind} needs the data set's folder ({kind}:ROOT)")


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


def find_config(spec: str | Path) -> Path:
    """The file ``spec`` names: an existing path, else a shipped recipe's name (``.yaml`` optional)."""
    path = Path(spec)
    if path.is_file():
        return path
    recipe = recipe_path(str(spec))
    if recipe is not None:
        return recipe
    names = recipe_names()
    stem = str(spec).removesuffix(".yaml")
    # the recipes lived in the checkout's configs/ folder before they shipped in the package
    moved = stem.removeprefix("configs/")
    if moved != stem and moved in names:
        hint = f" (the recipes ship in the package now: use '{moved}')"
    else:
        hint = did_you_mean(stem, names)
    raise ConfigError(
        f"config file not found: {spec}{hint}; "
        "give a YAML path or a recipe name (`densessl recipes` lists them)"
    )


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base``: mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_base(base: Any, including: Path) -> Path:
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{including}: base must be a recipe name or a path, got {base!r}")
    # a path relative to the including file wins over a recipe of the same name
    for candidate in (including.parent / base, including.parent / f"{base}.yaml"):
        if candidate.is_file():
            return candidate
    recipe = recipe_path(base)
    if recipe is not None:
        return recipe
    raise ConfigError(
        f"{including}: base '{base}' is neither a file next to it nor a recipe"
        f"{did_you_mean(base, recipe_names())}"
    )


def _unshared(node: Any) -> Any:
    """``node`` with every mapping and list copied once per place it appears: YAML anchors and
    aliases (``- *small``) load as one shared object, and an override addressed to one list
    element (``views.2.crop.size=32``) must not reach the others."""
    if isinstance(node, dict):
        return {key: _unshared(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_unshared(value) for value in node]
    return node


def load_recipe_data(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The plain data of the recipe file at ``path`` with its ``base:`` chain merged in."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"recipe bases form a cycle: {cycle}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _unshared(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: a YAML alias is used inside its own anchor") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping at the top level")
    if "base" not in data:
        return data
    own = dict(data)
    base = _resolve_base(own.pop("base"), path)
    return _merge(load_recipe_data(base, (*_chain, resolved)), own)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML recipe (a path or a shipped recipe's name) with its bases, apply overrides,
    validate."""
    data = load_recipe_data(find_config(path))
    for override in overrides or []:
        apply_override(data, override)
    return from_dict(data)


def config_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML, in field order (what ``--print-config`` shows)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, bases and overrides applied)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

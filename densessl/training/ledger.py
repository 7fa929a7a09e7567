"""The reproduction ledger: what a run was, and where and with what it ran.

Every checkpoint holds one under ``"ledger"``, and every export of such a checkpoint copies it
into its ``.json`` sidecar (and a ``.safetensors`` file's metadata). It is plain JSON-ready data:

- ``config``: the resolved config (every field, bases and overrides applied);
- ``densessl``: the version and, when densessl runs from a git checkout, the ``commit`` and
  whether the package's files differ from it (``dirty``);
- ``versions``: python, torch, torchvision, timm, numpy, CUDA and cuDNN;
- ``device`` (type and name), ``world_size``, ``precision`` (configured and resolved), ``seeds``;
- ``data``: the source, its image count and, for file sources, ``files_sha256``: a SHA-256 of
  the images' relative paths in the order the source reads them (sorted). Only names are hashed,
  not sizes or contents: a million-image folder on network storage would otherwise cost a stat
  or a read per file at every start, so an image rewritten under the same name leaves the
  fingerprint unchanged. Synthetic sources record their preset, split and length.

``densessl pretrain --reproduce CKPT`` rebuilds the config with :func:`ledger_config` and warns
about each line :func:`compare_ledger` finds between the recorded ledger and this environment's.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from densessl.config import ExperimentConfig, from_dict, to_dict
from densessl.errors import ConfigError

#: bumped when a field changes meaning
LEDGER_VERSION = 1
#: seconds a ``git`` call may take before the commit is left out (a hung network file system)
GIT_TIMEOUT_S = 5.0
#: fields that differ between any two runs by design: never reported as a difference
IGNORED = ("created",)
#: readable names of the ledger's fields, for the differences and ``densessl inspect``
LABELS = {
    "densessl.version": "densessl version",
    "densessl.commit": "densessl git commit",
    "densessl.dirty": "densessl uncommitted changes",
    "device.type": "device",
    "device.name": "device name",
    "world_size": "world size (processes)",
    "precision.configured": "precision (configured)",
    "precision.resolved": "precision (resolved)",
    "data.source": "data source",
    "data.images": "data image count",
    "data.files_sha256": "data file list (SHA-256 of the relative paths)",
}
PACKAGES = ("torch", "torchvision", "timm", "numpy")


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _densessl_version() -> str:
    import densessl

    return getattr(densessl, "__version__", None) or _package_version("densessl") or "unknown"


def git_state(package_dir: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout densessl runs from, or ``{}`` when it is not one
    (an installed wheel) or git does not answer in time."""
    package = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parents[1]
    root = package.parent
    # only the checkout that holds the package itself: a wheel installed into a virtual
    # environment inside some other project's repository must not report that repository
    if not (root / ".git").exists():
        return {}

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # the package's files only: an edited test or README changes nothing a run does
        changes = git("status", "--porcelain", "--", str(package))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": bool(changes)}


def _device_entry(device: Any) -> dict[str, Any]:
    import torch

    device = torch.device(device if device is not None else "cpu")
    entry: dict[str, Any] = {"type": device.type}
    if device.type == "cuda" and torch.cuda.is_available():
        entry["name"] = torch.cuda.get_device_name(device)
        entry["count"] = torch.cuda.device_count()
    elif device.type == "cpu":
        entry["name"] = platform.processor() or platform.machine()
    return entry


def _resolved_precision(precision: str, device: Any) -> str:
    import torch

    from densessl.training.trainer import resolve_precision

    dtype = resolve_precision(precision, torch.device(device if device is not None else "cpu"))
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(data, list | tuple) and data:
        flat = {}
        for i, value in enumerate(data):
            flat.update(_flatten(value, f"{prefix}{i}."))
        return flat
    return {prefix.rstrip("."): data}


def data_fingerprint(source: Any, spec: str | None = None) -> dict[str, Any]:
    """The image count and identity of an image source (see the module docstring)."""
    entry: dict[str, Any] = {"source": spec, "images": len(source)}
    paths = getattr(source, "paths", None)
    if paths is not None:
        h = hashlib.sha256()
        relative = getattr(paths, "relative", None)
        for i in range(len(paths)):
            name = relative(i) if relative is not None else str(paths[i])
            h.update(name.encode("utf-8", "surrogateescape") + b"\n")
        entry["kind"] = "files"
        entry["files_sha256"] = h.hexdigest()
        return entry
    if hasattr(source, "scenes"):
        entry["kind"] = "synthetic"
        kind, sep, preset = (spec or "synthetic").partition(":")
        entry["preset"] = preset.strip() if sep else "medium"
        entry["split"] = getattr(source, "split", None)
        entry["length"] = len(source)
        return entry
    entry["kind"] = type(source).__name__
    return entry


def build_ledger(
    config: ExperimentConfig, source: Any = None, device: Any = None, world_size: int = 1
) -> dict[str, Any]:
    """The ledger of a run of ``config`` reading ``source`` on ``device`` with ``world_size``
    processes: plain data, ready for a checkpoint or JSON. ``source`` None: no data entry."""
    settings = to_dict(config)
    ledger: dict[str, Any] = {
        "ledger": LEDGER_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": settings,
        "densessl": {"version": _densessl_version(), **git_state()},
        "versions": {
            "python": platform.python_version(),
            **{name: _package_version(name) for name in PACKAGES},
        },
        "platform": platform.platform(),
        "device": _device_entry(device),
        "world_size": int(world_size),
        "precision": {
            "configured": config.train.precision,
            "resolved": _resolved_precision(config.train.precision, device),
        },
        # every seed of the config, wherever a method keeps its own
        "seeds": {
            k: v
            for k, v in _flatten(settings).items()
            if k.rsplit(".", 1)[-1].endswith("seed") and v is not None  # unset: another seed stands in
        },
    }
    import torch

    ledger["versions"]["cuda"] = torch.version.cuda
    if torch.backends.cudnn.is_available():
        ledger["versions"]["cudnn"] = torch.backends.cudnn.version()
    if source is not None:
        ledger["data"] = data_fingerprint(source, config.data.source)
    return ledger


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a SHA-256: its first characters tell two apart
    return str(value)


def compare_ledger(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line for every field in which ``current`` differs from ``recorded``: config, versions,
    commit, device, world size, precision, seeds and data."""
    old = {k: v for k, v in _flatten(recorded).items() if k.split(".")[0] not in IGNORED}
    new = {k: v for k, v in _flatten(current).items() if k.split(".")[0] not in IGNORED}
    # a side that records no data (its source was not read) says nothing about the data
    for side, other in ((old, new), (new, old)):
        if not any(k.startswith("data.") for k in side):
            for key in [k for k in other if k.startswith("data.")]:
                other.pop(key)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) == new.get(key):
            continue
        if key.startswith("versions."):
            label = f"{key.removeprefix('versions.')} version"
        elif key.startswith("config."):
            label = f"config {key.removeprefix('config.')}"
        else:
            label = LABELS.get(key, key)
        lines.append(f"{label}: {_show(old.get(key))} recorded, {_show(new.get(key))} here")
    return lines


def ledger_config(ledger: dict[str, Any]) -> ExperimentConfig:
    """The run's config as the ledger records it, validated as a recipe is."""
    if not isinstance(ledger, dict) or not isinstance(ledger.get("config"), dict):
        raise ConfigError("the ledger records no config")
    return from_dict(ledger["config"])


def ledger_lines(ledger: dict[str, Any]) -> list[str]:
    """The ledger as a few readable lines (``densessl inspect``)."""
    pkg = ledger.get("densessl", {})
    commit = pkg.get("commit")
    where = (
        f", commit {commit[:12]}{' with uncommitted changes' if pkg.get('dirty') else ''}" if commit else ""
    )
    versions = ledger.get("versions", {})
    device = ledger.get("device", {})
    precision = ledger.get("precision", {})
    lines = [
        f"written: {ledger.get('created', 'unknown')} by densessl {pkg.get('version', 'unknown')}{where}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None),
        f"device: {device.get('type', 'unknown')}"
        + (f" ({device['name']})" if device.get("name") else "")
        + f", world size {ledger.get('world_size', '?')}",
        f"precision: {precision.get('configured', '?')} (resolved: {precision.get('resolved', '?')})",
        "seeds: " + (", ".join(f"{k}={v}" for k, v in ledger.get("seeds", {}).items()) or "(none)"),
    ]
    data = ledger.get("data")
    if data:
        text = f"data: {data.get('source')}, {data.get('images')} images"
        if data.get("files_sha256"):
            text += f", file list {data['files_sha256'][:12]}"
        elif data.get("kind") == "synthetic":
            text += f" (preset {data.get('preset')}, split {data.get('split')})"
        lines.append(text)
    return lines

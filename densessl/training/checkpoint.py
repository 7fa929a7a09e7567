"""Training checkpoints: written atomically, verified when read, found again for ``--resume auto``.

A checkpoint is a dict with ``format``, ``method``, ``config`` (plain data), ``model`` (the
method's state dict: encoders, heads, queues, centres), ``optimizer``, ``scaler``, ``step``,
``epoch``, ``rng``, ``dataset_size`` and ``checksum``.

- It is written to a temporary file in the same folder and renamed, so a crash while saving never
  leaves a truncated checkpoint behind; a failed write (disk full, read-only folder) removes its
  temporary file and raises :class:`CheckpointError` with one line.
- ``checksum`` is a SHA-256 digest of every tensor's bytes and every other value's pickle, taken
  before saving and compared after loading: PyTorch's zip container does not check its records,
  so a region of zeros in the file would otherwise load as silently damaged weights.
- ``--resume auto`` takes the newest checkpoint that reads back intact: ``last.pt``, else the
  epoch files from the newest down, with a warning for each one passed over.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densessl.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT = "densessl-checkpoint-v1"
LAST = "last.pt"
#: temporary files of saves that never finished (the process was killed mid-write)
TEMP_PATTERN = re.compile(r"^\..+\.tmp-\d+$")


def _digest_into(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key, item in value.items():
            h.update(repr(key).encode())
            _digest_into(h, item)
    elif isinstance(value, list | tuple):
        h.update(f"L{len(value)}".encode())
        for item in value:
            _digest_into(h, item)
    else:
        h.update(pickle.dumps(value, protocol=4))


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's contents, ``checksum`` itself left out."""
    h = hashlib.sha256()
    _digest_into(h, {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def describe_os_error(exc: BaseException, folder: Path) -> str:
    """One line for a failed write into ``folder``: what the OS said, in words a user acts on."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "unexpected pos" in str(exc):
        # PyTorch's zip writer reports a short write as "unexpected pos"
        try:
            free = shutil.disk_usage(folder).free / 2**20
            return f"no space left on the device of {folder} ({free:.0f} MiB free)"
        except OSError:
            return f"no space left on the device of {folder}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{folder} is not writable ({os.strerror(code)})"
    return str(getattr(exc, "strerror", None) or exc).splitlines()[0]


def _write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` a temporary sibling of ``path``, then rename it; nothing partial is left behind,
    and a failure is one :class:`CheckpointError` line."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        reason = describe_os_error(exc, path.parent)
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return _write_atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def copy_atomic(source: Path, path: Path) -> Path:
    """Copy a written checkpoint under another name, atomically like :func:`save_atomic`."""
    return _write_atomic(Path(path), lambda tmp: shutil.copyfile(source, tmp))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted saves left in ``folder``; returns them."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for item in folder.iterdir():
            if TEMP_PATTERN.match(item.name) and item.is_file():
                item.unlink(missing_ok=True)
                removed.append(item)
    return removed


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a densessl training checkpoint and verify its checksum, with a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # any unpickling failure means the same to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} (damaged or not a checkpoint): {reason}"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a densessl training checkpoint")
    expected = ckpt.get("checksum")
    if expected is not None and state_digest(ckpt) != expected:
        raise CheckpointError(f"{path} is damaged: its contents do not match the checksum written with it")
    return ckpt


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, newest first: ``last.pt``, then ``epoch_NNNN.pt`` by epoch."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    epochs = sorted(folder.glob("epoch_*.pt"), key=lambda p: p.stem, reverse=True)
    last = folder / LAST
    return ([last] if last.is_file() else []) + epochs


def find_resume_checkpoint(
    run_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact checkpoint of a run and its contents, or None when the run has none.

    A damaged candidate is passed over with a warning; when every one is damaged the error names
    them all.
    """
    candidates = checkpoint_candidates(run_dir)
    failures = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path, map_location)
        except CheckpointError as exc:
            log.warning("%s; trying an older checkpoint", exc)
            failures.append(path.name)
            continue
        if failures:
            log.warning("resuming from %s instead of the damaged %s", path, ", ".join(failures))
        return path, ckpt
    if failures:
        raise CheckpointError(
            f"no intact checkpoint in {Path(run_dir) / 'checkpoints'} (damaged: {', '.join(failures)})"
        )
    return None

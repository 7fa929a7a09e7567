"""Training checkpoints: written atomically, found again for ``--resume auto``.

A checkpoint is a dict with ``format``, ``method``, ``config`` (plain data), ``model`` (the
method's state dict: encoders, heads, queues, centres), ``optimizer``, ``scaler``, ``step``,
``epoch`` and ``rng``. It is written to a temporary file in the same folder and renamed, so a
crash while saving never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "densessl-checkpoint-v1"
LAST = "last.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or is not a densessl checkpoint."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    """Load a densessl training checkpoint, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # any unpickling failure means the same to the user
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a densessl training checkpoint")
    return ckpt


def find_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume auto`` continues from: the run's ``last.pt``, if any."""
    candidate = Path(run_dir) / "checkpoints" / LAST
    return candidate if candidate.is_file() else None

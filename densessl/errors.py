"""The errors densessl raises for the user: their message is meant to be shown as is.

They live here, below every other module, so that any module (and the command line, which turns
them into one-line messages) can name them without importing the code that raises them: catching
a :class:`CheckpointError` must not load the trainer, nor a :class:`ConfigError` every method.
Their historical homes (``densessl.config``, ``densessl.data.base``,
``densessl.training.checkpoint``, ``densessl.training.trainer``) re-export the same classes.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "CorruptImageError",
    "DataError",
    "DensesslError",
    "TrainingError",
]


class DensesslError(Exception):
    """Base of every error below: one ``except DensesslError`` catches what the user must fix."""


# Each keeps the built-in base it had before it moved here, so callers catching ValueError or
# RuntimeError still catch it.
class ConfigError(DensesslError, ValueError):
    """A configuration file or override is invalid; the message is meant for the user as is."""


class DataError(DensesslError, RuntimeError):
    """A dataset cannot be used: missing folder, no images, unreadable file under policy 'error'."""


class CorruptImageError(DataError):
    """One image could not be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


class CheckpointError(DensesslError, RuntimeError):
    """A checkpoint is missing, damaged, unwritable or is not a densessl checkpoint."""


class TrainingError(DensesslError, RuntimeError):
    """Training cannot go on (diverged loss, bad resume target); the message says why."""

"""Pre-training methods; importing this package registers every method in ``METHODS``."""

from densessl.methods import densecl, mocov2, slotcon  # noqa: F401  (registration)
from densessl.methods.base import METHODS, Method, Step, Views, build_method, register

__all__ = ["METHODS", "Method", "Step", "Views", "build_method", "register"]

"""Pre-training recipes shipped with the package, addressed by name.

A recipe is a YAML file below this package, named by its path without the suffix:
``densecl/coco_r50_800ep`` is ``densessl/recipes/densecl/coco_r50_800ep.yaml``. They are package
data, so ``densessl pretrain densecl/coco_r50_800ep`` and ``densessl demo`` work after a plain
``pip install`` as well as from a checkout. ``quick/<method>_synthetic`` are the small CPU
recipes of the demo. Loading (``base:`` inheritance, overrides, validation) is
:func:`densessl.config.load_config`'s job; this module only finds files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIX = ".yaml"


def recipe_dir() -> Path:
    """The folder holding the shipped recipes (a real folder for regular and editable installs)."""
    return Path(str(resources.files(__name__)))


def recipe_names() -> list[str]:
    """Every shipped recipe's name, sorted (``densecl/coco_r50_800ep``, ``quick/densecl_synthetic``...)."""
    root = recipe_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}"))


def recipe_path(name: str) -> Path | None:
    """The file of recipe ``name`` (with or without ``.yaml``), or None when no recipe has that name."""
    stem = name.removesuffix(SUFFIX).strip("/")
    if not stem or ".." in stem.split("/"):
        return None
    path = recipe_dir() / f"{stem}{SUFFIX}"
    return path if path.is_file() else None


def quick_methods() -> list[str]:
    """Methods with a quick synthetic recipe (``quick/<method>_synthetic``): the demo's choices."""
    return sorted(
        n.removeprefix("quick/").removesuffix("_synthetic")
        for n in recipe_names()
        if n.startswith("quick/") and n.endswith("_synthetic")
    )

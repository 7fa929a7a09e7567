"""Image sources: folders of images, COCO 2017 (and COCO+), and the synthetic scene benchmark.

Every source implements :class:`~densessl.data.base.ImageSource`. File lists are kept as one
packed byte buffer plus offsets instead of a Python list of strings: data-loader workers forked
from the main process then share the pages instead of copying them when reference counts are
touched, which is what makes large Python path lists grow worker memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .base import CorruptImageError, DataError
from .decode import EncodedImage, open_image
from .synthetic import PRESETS, SynthConfig, SyntheticScenes

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def is_image_file(name: str) -> bool:
    """True for names with an image extension (case-insensitive) that are not hidden files."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array of a loaded PIL image of any mode (alpha dropped)."""
    mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        # 16-bit grey levels are scaled down; a generic 'I'/'F' image is taken as 16-bit only if
        # it actually uses values beyond 8 bits
        if mode in _SIXTEEN_BIT_MODES or (mode == "I" and values.size and values.max() > 255):
            values = values / 257.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if mode == "P" and "transparency" in img.info:
        # palette transparency must go through RGBA; alpha is then dropped like torchvision does
        img = img.convert("RGBA")
    return np.array(img.convert("RGB"), dtype=np.uint8)


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """Fully decode the image at ``path`` into an RGB uint8 array of shape (H, W, 3).

    Palette, grey, 16-bit grey, grey+alpha, RGBA and CMYK images are converted to RGB (alpha is
    dropped, as torchvision's loader does); EXIF orientation is not applied. Any failure (missing
    or empty file, not an image, truncated data) raises :class:`CorruptImageError`. The full
    decode (``Image.load``) is what detects truncated JPEGs, unless some other code set
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise CorruptImageError(path, "empty file (0 bytes)")
        with Image.open(path) as img:
            img.load()
            array = to_rgb_array(img)
    except CorruptImageError:
        raise
    except Exception as exc:  # PIL plugins raise many types on malformed data
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise CorruptImageError(path, f"decoded to an unexpected shape {array.shape}")
    return array


class PackedPaths(Sequence[str]):
    """An immutable list of paths under one root, stored as a packed UTF-8 buffer and offsets."""

    def __init__(self, root: str | os.PathLike, relative: Iterable[str]) -> None:
        self.root = os.fspath(root)
        encoded = [p.encode("utf-8", "surrogateescape") for p in relative]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def relative(self, index: int) -> str:
        """The path of entry ``index`` relative to the root."""
        start, end = self._offsets[index], self._offsets[index + 1]
        return self._buffer[start:end].tobytes().decode("utf-8", "surrogateescape")

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return os.path.join(self.root, self.relative(index))


def _sort_key(relative: str) -> tuple[str, ...]:
    # compare component by component so that "a/b.jpg" sorts with its folder, not by character
    return tuple(relative.split("/"))


class FileListSource:
    """Shared ``ImageSource`` behaviour for sources backed by a list of files."""

    paths: PackedPaths

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        """Absolute (or root-relative, as given) path of image ``index``."""
        return self.paths[index]

    def load(self, index: int) -> np.ndarray:
        return decode_image(self.paths[index])

    def encoded(self, index: int) -> EncodedImage:
        """Image ``index`` read and its header parsed, not decoded: pre-training draws the crop
        boxes from its size first, then decodes it (upright, possibly at a reduced size)."""
        return open_image(self.paths[index])

    def describe(self, index: int) -> str:
        return self.paths[index]


class FolderSource(FileListSource):
    """Every image file under ``root`` (recursively by default), in sorted path order.

    Images are files with one of :data:`IMAGE_EXTENSIONS` (any case). Hidden files and folders
    (name starting with ".") are skipped; they are mostly macOS "._" resource forks, which are
    not images. Symbolic links to folders are followed once (cycles are cut).
    """

    def __init__(self, root: str | os.PathLike, recursive: bool = True) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a directory")
        self.recursive = recursive
        relative = sorted(self._scan(), key=_sort_key)
        if not relative:
            where = "under" if recursive else "directly in"
            raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found {where} {self.root}")
        self.paths = PackedPaths(self.root, relative)

    def _scan(self) -> list[str]:
        root = os.fspath(self.root)
        if not self.recursive:
            with os.scandir(root) as entries:
                return [e.name for e in entries if is_image_file(e.name) and e.is_file()]
        found: list[str] = []
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                if is_image_file(name):
                    rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                    found.append(rel.replace(os.sep, "/"))
        return found


class CocoSource(FileListSource):
    """Images of the COCO 2017 layout: ``<root>/<split>/*.jpg`` for each split, in order.

    ``root`` is the ``coco`` folder (holding ``train2017/``) or the folder that contains
    ``coco/``. COCO+ as used by SlotCon and CrOC is ``splits=("train2017", "unlabeled2017")``.
    """

    def __init__(self, root: str | os.PathLike, splits: Sequence[str] = ("train2017",)) -> None:
        given = Path(root).expanduser()
        if isinstance(splits, str):
            splits = (splits,)
        if not splits:
            raise DataError("CocoSource needs at least one split folder name, e.g. 'train2017'")
        if not given.is_dir():
            raise DataError(f"COCO folder {given} does not exist or is not a directory")
        base = given
        if not any((given / s).is_dir() for s in splits) and (given / "coco").is_dir():
            base = given / "coco"
        self.root = base
        self.splits = tuple(splits)
        relative: list[str] = []
        for split in self.splits:
            folder = base / split
            if not folder.is_dir():
                raise DataError(
                    f"COCO split folder {folder} is missing; expected the COCO 2017 layout "
                    f"<coco>/{split}/*.jpg with <coco> = {base}"
                )
            with os.scandir(folder) as entries:
                names = sorted(e.name for e in entries if is_image_file(e.name) and e.is_file())
            if not names:
                raise DataError(f"COCO split folder {folder} contains no images")
            relative.extend(f"{split}/{name}" for name in names)
        self.paths = PackedPaths(base, relative)


class SyntheticSource:
    """The images of the synthetic scene benchmark as an :class:`ImageSource` (masks dropped).

    Rendering is deterministic, so rendered images are kept (up to ``cache_bytes`` per process)
    and later epochs cost no rendering: on a 2-core machine rendering would otherwise take CPU
    time from the training step.
    """

    def __init__(
        self,
        config: SynthConfig | str | None = None,
        split: str = "train",
        length: int = 10_000,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        try:
            self.scenes = SyntheticScenes(config, split, length)
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        self.cache_bytes = cache_bytes
        self._cache: dict[int, np.ndarray] = {}
        self._cached_bytes = 0

    @property
    def config(self) -> SynthConfig:
        return self.scenes.config

    @property
    def split(self) -> str:
        return self.scenes.split

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, index: int) -> np.ndarray:
        image = self._cache.get(index)
        if image is None:
            image = self.scenes.render(index)[0]
            if self._cached_bytes + image.nbytes <= self.cache_bytes:
                self._cache[index] = image
                self._cached_bytes += image.nbytes
        return image

    def describe(self, index: int) -> str:
        return f"synthetic:{self.split}:{index}"


_SPEC_HELP = (
    "folder:<path>, coco:<path> (train2017), coco+:<path> (train2017 + unlabeled2017), "
    f"synthetic, synthetic:<preset> with preset one of {', '.join(PRESETS)}"
)


def parse_source(
    spec: str,
    *,
    split: str = "train",
    length: int = 10_000,
    recursive: bool = True,
) -> FolderSource | CocoSource | SyntheticSource:
    """Build an image source from a string such as ``"coco+:/data/coco"`` or ``"synthetic:hard"``.

    ``split`` and ``length`` apply to synthetic sources, ``recursive`` to folder sources.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty image source specification; valid forms: {_SPEC_HELP}")
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "synthetic":
        preset = arg.strip() if sep else "medium"
        if preset not in PRESETS:
            raise DataError(
                f"unknown synthetic preset {preset!r} in {spec!r}; valid presets: {', '.join(PRESETS)}"
            )
        return SyntheticSource(PRESETS[preset], split=split, length=length)
    if kind in ("folder", "coco", "coco+"):
        if not arg.strip():
            raise DataError(f"image source {spec!r} names no path; valid forms: {_SPEC_HELP}")
        path = arg.strip()
        if kind == "folder":
            return FolderSource(path, recursive=recursive)
        splits = ("train2017",) if kind == "coco" else ("train2017", "unlabeled2017")
        return CocoSource(path, splits)
    raise DataError(f"unknown image source {spec!r}; valid forms: {_SPEC_HELP}")

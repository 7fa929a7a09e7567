"""Reader for the DAVIS-2017 semi-supervised layout, and a tiny fixture writer in that layout.

Layout (spec A8), under the ``DAVIS`` folder::

    JPEGImages/480p/<seq>/00000.jpg ...       frames, RGB JPEG
    Annotations/480p/<seq>/00000.png ...      mode 'P' PNGs; palette *indices* are object ids:
                                              0 = background, 1..N = objects, 255 = void if present
    ImageSets/2017/{train,val}.txt            one sequence name per line

Annotation values are always the palette indices, never the colours (the DAVIS palette is the
PASCAL VOC colour map). A sequence's frames are its ``*.jpg`` files in name order (numeric when
the names are numbers); frame ``i``'s annotation is the PNG with the same stem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DataError
from .sources import decode_image
from .synthetic import save_palette_png
from .voc import read_label_png

__all__ = ["DAVIS2017", "DAVISFrames", "find_davis_root", "fixture_clip", "write_davis_fixture"]

VOID = 255


def find_davis_root(root: str | os.PathLike) -> Path:
    """Locate the DAVIS folder given itself or the folder that holds ``DAVIS/``."""
    root = Path(root).expanduser()
    candidates = (root, root / "DAVIS")
    for candidate in candidates:
        if (candidate / "JPEGImages").is_dir() or (candidate / "ImageSets").is_dir():
            return candidate
    raise DataError(
        f"no DAVIS folder (with JPEGImages/ and ImageSets/2017/) found at {root} or {root / 'DAVIS'}"
    )


def _frame_key(name: str) -> tuple[int, int | str]:
    stem = name.rsplit(".", 1)[0]
    return (0, int(stem)) if stem.isdigit() else (1, stem)


class DAVISFrames(Sequence[np.ndarray]):
    """The frames of one sequence as a list of RGB uint8 arrays, decoded on access.

    ``describe(i)`` names the frame file, which also keys the frozen-feature cache.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return decode_image(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])


class DAVIS2017:
    """The sequences of one DAVIS-2017 split.

    ``root`` is the ``DAVIS`` folder or the folder holding it. ``sequences`` restricts the split
    to the named sequences (in the given order). Every listed sequence must have a frame folder
    and a first-frame annotation; frames are decoded only when asked for.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
    ) -> None:
        self.root = find_davis_root(root)
        self.split = split
        self.resolution = resolution
        self.image_root = self.root / "JPEGImages" / resolution
        self.annotation_root = self.root / "Annotations" / resolution
        for folder in (self.image_root, self.annotation_root):
            if not folder.is_dir():
                raise DataError(f"DAVIS folder {folder} is missing")
        sets = self.root / "ImageSets" / "2017"
        split_file = sets / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
            raise DataError(
                f"split file {split_file} is missing; available splits: {', '.join(available) or 'none'}"
            )
        names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not names:
            raise DataError(f"split file {split_file} lists no sequences")
        if sequences is not None:
            unknown = [s for s in sequences if s not in names]
            if unknown:
                raise DataError(
                    f"sequence {unknown[0]!r} is not in split {split!r} ({split_file}); "
                    f"it has {len(names)}: {_preview(names)}"
                )
            names = list(sequences)
        self.sequences: list[str] = names
        self._frames: dict[str, list[str]] = {}
        for name in names:
            folder = self.image_root / name
            if not folder.is_dir():
                raise DataError(f"sequence {name!r} listed in {split_file} has no frame folder {folder}")
            first = self.annotation_path(name, 0)
            if not first.is_file():
                raise DataError(f"sequence {name!r} has no first-frame annotation {first}")

    # -- sequences --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self):
        return iter(self.sequences)

    def _name(self, sequence: str | int) -> str:
        if isinstance(sequence, int | np.integer):
            n = len(self.sequences)
            index = int(sequence) + n if sequence < 0 else int(sequence)
            if not 0 <= index < n:
                raise IndexError(f"sequence index {sequence} out of range for {n} sequences")
            return self.sequences[index]
        if sequence not in self.sequences:
            raise DataError(
                f"sequence {sequence!r} is not in split {self.split!r} of {self.root}; "
                f"it has {len(self.sequences)}: {_preview(self.sequences)}"
            )
        return sequence

    def describe(self, sequence: str | int, frame: int | None = None) -> str:
        """The frame folder of a sequence, or the file of one of its frames."""
        name = self._name(sequence)
        return str(self.image_root / name if frame is None else self.frame_path(name, frame))

    # -- frames -----------------------------------------------------------------------------

    def _files(self, name: str) -> list[str]:
        if name not in self._frames:
            folder = self.image_root / name
            files = sorted((p.name for p in folder.iterdir() if p.suffix.lower() == ".jpg"), key=_frame_key)
            if not files:
                raise DataError(f"sequence {name!r} has no .jpg frames in {folder}")
            self._frames[name] = files
        return self._frames[name]

    def frame_names(self, sequence: str | int) -> list[str]:
        """Frame stems of a sequence in order (``00000``, ``00001``, ...)."""
        return [f.rsplit(".", 1)[0] for f in self._files(self._name(sequence))]

    def num_frames(self, sequence: str | int) -> int:
        return len(self._files(self._name(sequence)))

    def frame_path(self, sequence: str | int, frame: int) -> Path:
        name = self._name(sequence)
        return self.image_root / name / self._files(name)[frame]

    def annotation_path(self, sequence: str | int, frame: int) -> Path:
        name = self._name(sequence)
        stem = self._files(name)[frame].rsplit(".", 1)[0]
        return self.annotation_root / name / f"{stem}.png"

    def frames(self, sequence: str | int) -> DAVISFrames:
        """The frames of a sequence as a lazily decoded list (usable by the feature extractor)."""
        name = self._name(sequence)
        return DAVISFrames([self.frame_path(name, i) for i in range(self.num_frames(name))])

    def load_frame(self, sequence: str | int, frame: int) -> np.ndarray:
        """RGB uint8 (H, W, 3); a file that cannot be decoded raises CorruptImageError naming it."""
        return decode_image(self.frame_path(sequence, frame))

    # -- annotations ------------------------------------------------------------------------

    def load_annotation(self, sequence: str | int, frame: int) -> np.ndarray:
        """Object-id map uint8 (H, W) of one frame: 0 background, 1..N objects, 255 void."""
        path = self.annotation_path(sequence, frame)
        if not path.is_file():
            raise DataError(
                f"annotation {path} is missing (frame {frame} of sequence {self._name(sequence)!r})"
            )
        return read_label_png(path)

    def first_annotation(self, sequence: str | int) -> np.ndarray:
        """The given first-frame object-id map."""
        return self.load_annotation(sequence, 0)

    def annotations(self, sequence: str | int) -> np.ndarray:
        """Object-id maps of every frame, (T, H, W) uint8; scoring needs all of them (train/val)."""
        name = self._name(sequence)
        masks = [self.load_annotation(name, i) for i in range(self.num_frames(name))]
        shape = masks[0].shape
        for i, m in enumerate(masks):
            if m.shape != shape:
                raise DataError(
                    f"annotation {self.annotation_path(name, i)} is {m.shape[1]}x{m.shape[0]} but the "
                    f"first one of sequence {name!r} is {shape[1]}x{shape[0]}"
                )
        return np.stack(masks)

    def num_objects(self, sequence: str | int) -> int:
        """Objects of a sequence: the largest non-void id of its first annotation (DAVIS convention)."""
        first = self.first_annotation(sequence)
        ids = first[first != VOID]
        return int(ids.max()) if ids.size else 0


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


# ----------------------------------------------------------------------------------------------
# fixture
# ----------------------------------------------------------------------------------------------


def fixture_clip(
    index: int,
    frames: int = 4,
    size: tuple[int, int] = (40, 56),
    objects: int = 2,
    seed: int = 0,
    void: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and id maps (T, H, W) uint8 of fixture sequence ``index``.

    Noise background; ``objects`` noisy-coloured rectangles (ids in painting order, later ones in
    front) that move by 1-2 px per frame. ``void`` draws a 1 px 255 band around object 1.
    """
    rng = np.random.default_rng([seed, index])
    h, w = size
    background = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    boxes = []
    for _ in range(objects):
        bh, bw = int(rng.integers(h // 5, h // 2)), int(rng.integers(w // 5, w // 2))
        y, x = int(rng.integers(1, h - bh - 1)), int(rng.integers(1, w - bw - 1))
        dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
        colour = rng.integers(0, 256, size=3)
        texture = rng.integers(-40, 41, size=(bh, bw, 3))
        boxes.append((bh, bw, y, x, dy, dx, np.clip(colour + texture, 0, 255).astype(np.uint8)))
    images = np.empty((frames, h, w, 3), dtype=np.uint8)
    masks = np.zeros((frames, h, w), dtype=np.uint8)
    for t in range(frames):
        images[t] = background
        for k, (bh, bw, y, x, dy, dx, patch) in enumerate(boxes, start=1):
            y0 = int(np.clip(y + dy * t, 0, h - bh))
            x0 = int(np.clip(x + dx * t, 0, w - bw))
            images[t, y0 : y0 + bh, x0 : x0 + bw] = patch
            masks[t, y0 : y0 + bh, x0 : x0 + bw] = k
        if void and objects:
            inside = masks[t] == 1
            grown = inside.copy()
            grown[1:] |= inside[:-1]
            grown[:-1] |= inside[1:]
            grown[:, 1:] |= inside[:, :-1]
            grown[:, :-1] |= inside[:, 1:]
            masks[t][grown & ~inside & (masks[t] == 0)] = VOID
    return images, masks


def write_davis_fixture(
    root: str | os.PathLike,
    sequences: Sequence[str] = ("blue-box", "red-box"),
    frames: int = 4,
    size: tuple[int, int] = (40, 56),
    objects: int = 2,
    seed: int = 0,
    void: bool = False,
    resolution: str = "480p",
) -> Path:
    """Write a tiny DAVIS-2017 folder at ``root/DAVIS`` and return it.

    Sequence ``i`` is :func:`fixture_clip` ``(i, frames, size, objects, seed, void)``: JPEG
    frames ``00000.jpg ...`` and mode 'P' annotations with the DAVIS (= VOC) palette.
    ``ImageSets/2017/val.txt`` lists every sequence and ``train.txt`` the first one.
    """
    davis = Path(root) / "DAVIS"
    for i, name in enumerate(sequences):
        images, masks = fixture_clip(i, frames, size, objects, seed, void)
        image_dir = davis / "JPEGImages" / resolution / name
        mask_dir = davis / "Annotations" / resolution / name
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            Image.fromarray(images[t]).save(image_dir / f"{t:05d}.jpg", quality=95, subsampling=0)
            save_palette_png(masks[t], mask_dir / f"{t:05d}.png")
    sets = davis / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("".join(f"{s}\n" for s in sequences))
    (sets / "train.txt").write_text("".join(f"{s}\n" for s in list(sequences)[:1]))
    return davis

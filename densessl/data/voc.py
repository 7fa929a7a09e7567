"""Reader for the PASCAL VOC 2012 segmentation layout (also used by the synthetic benchmark).

Layout (``VOCdevkit/VOC2012``): ``JPEGImages/<stem>.jpg``, ``SegmentationClass/<stem>.png``
(mode 'P', values 0..20, 255 = void), ``ImageSets/Segmentation/<split>.txt`` (one stem per
line). Mask values are the palette *indices* of the PNG, never its colours.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from .base import CorruptImageError, DataError, ImageMaskPairs, checked_index
from .sources import decode_image

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

VOID_LABEL = 255

#: image names of PASCAL VOC 2007-2012 and SBD (``2007_000032``), and of VOC 2007's own
#: segmentation set (``000032``): what tells PASCAL apart from a custom set in the same layout
PASCAL_STEM = re.compile(r"(\d{4}_)?\d{6}")


def find_voc_root(root: str | os.PathLike) -> Path:
    """Locate the ``VOC2012`` folder given itself, ``VOCdevkit``, or the folder holding ``VOCdevkit``."""
    root = Path(root).expanduser()
    candidates = (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012")
    for candidate in candidates:
        if (candidate / "ImageSets" / "Segmentation").is_dir() or (candidate / "JPEGImages").is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"no PASCAL VOC 2012 folder (with JPEGImages/ and ImageSets/Segmentation/) found; tried {tried}"
    )


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map PNG as uint8 (H, W) indices: palette indices for 'P', values for 'L'."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"mask file {path} is missing")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ("P", "L"):
                raise DataError(
                    f"mask {path} has mode {mode!r}; expected a palette ('P') or 8-bit ('L') PNG "
                    "of class indices"
                )
            return np.array(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # PIL plugins raise many types on malformed data
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc


class VOCSegmentation(ImageMaskPairs):
    """PASCAL VOC 2012 semantic segmentation split, returning ``(image, mask)`` uint8 arrays.

    ``image`` is (H, W, 3) RGB, ``mask`` (H, W) with class ids and 255 for void. ``root`` may be
    the ``VOC2012`` folder, ``VOCdevkit`` or the folder holding ``VOCdevkit``. ``mask_dir`` selects
    e.g. ``SegmentationClassAug``. If ``labels.txt`` (one class name per line, for ids 0, 1, ...)
    sits in the VOC2012 folder, it defines the classes (the synthetic benchmark writes one).
    Without it the folder must be PASCAL VOC itself (image names such as ``2007_000032``), which
    has the 21 VOC classes; a custom set in this layout raises :class:`DataError` asking for
    ``labels.txt``, since scoring it over PASCAL's classes would count each class it lacks as
    IoU 0. A mask id beyond the class list (255 = void aside) raises :class:`DataError` when the
    mask is read. Also usable as an :class:`~densessl.data.base.ImageSource`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        mask_dir: str = "SegmentationClass",
        image_dir: str = "JPEGImages",
    ) -> None:
        self.root = find_voc_root(root)
        self.split = split
        self.image_dir = self.root / image_dir
        self.mask_dir = self.root / mask_dir
        sets = self.root / "ImageSets" / "Segmentation"
        split_file = sets / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
            raise DataError(
                f"split file {split_file} is missing; available splits: {', '.join(available) or 'none'}"
            )
        stems = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not stems:
            raise DataError(f"split file {split_file} lists no images")
        self.stems: list[str] = stems
        self._check_files()

        self.labels_file = self.root / "labels.txt"
        if self.labels_file.is_file():
            names = [line.strip() for line in self.labels_file.read_text().splitlines() if line.strip()]
            if not names:
                raise DataError(f"class list {self.labels_file} is empty")
            self.class_names: list[str] = names
        else:
            foreign = next((stem for stem in stems if not PASCAL_STEM.fullmatch(stem)), None)
            if foreign is not None:
                # Scoring such a set over PASCAL's 21 classes would count every class it lacks
                # as IoU 0 and pull the mIoU down without a word; its own names are not
                # written anywhere, so the user has to supply them.
                raise DataError(
                    f"{self.root} has no labels.txt and its images are not PASCAL VOC's (e.g. "
                    f"{foreign!r}), so its classes are unknown; {self._ids_hint()}write "
                    f"{self.labels_file} with one class name per line, for ids 0, 1, ... in order"
                )
            self.class_names = list(VOC_CLASSES)

    def _ids_hint(self, limit: int = 200) -> str:
        """``"its masks hold ids ...; "`` from the first ``limit`` masks (only for messages)."""
        seen: set[int] = set()
        for index in range(min(len(self), limit)):
            try:
                seen.update(np.unique(read_label_png(self.mask_path(index))).tolist())
            except DataError:
                continue
        seen.discard(VOID_LABEL)
        if not seen:
            return ""
        where = "" if len(self) <= limit else f" (first {limit})"
        return f"its masks{where} hold ids {_id_list(sorted(seen))}; "

    def _check_files(self) -> None:
        for kind, paths in (
            ("image", map(self.image_path, range(len(self)))),
            ("mask", map(self.mask_path, range(len(self)))),
        ):
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise DataError(
                    f"{len(missing)} {kind} file(s) of split {self.split!r} are missing, e.g. {missing[0]}"
                )

    @property
    def num_classes(self) -> int:
        """Number of classes including the background (21 for PASCAL VOC)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.stems)

    def _index(self, index: int) -> int:
        return checked_index(index, len(self.stems), f"images in split {self.split!r}")

    def image_path(self, index: int) -> Path:
        return self.image_dir / f"{self.stems[self._index(index)]}.jpg"

    def mask_path(self, index: int) -> Path:
        return self.mask_dir / f"{self.stems[self._index(index)]}.png"

    def load(self, index: int) -> np.ndarray:
        """The RGB image only (``ImageSource`` protocol)."""
        return decode_image(self.image_path(index))

    def load_mask(self, index: int) -> np.ndarray:
        """The (H, W) uint8 class-index mask; 255 = void.

        An id outside the class list raises :class:`DataError` naming the ids and the fix,
        rather than failing deep inside a metric or being scored as a wrong class.
        """
        path = self.mask_path(index)
        mask = read_label_png(path)
        n = self.num_classes
        outside = (mask >= n) & (mask != VOID_LABEL)
        if outside.any():
            ids = np.unique(mask[outside]).tolist()
            if self.labels_file.is_file():
                listed, fix = f"the {n} classes of {self.labels_file}", "add their names to it"
            else:
                listed = f"PASCAL VOC's {n} classes (there is no labels.txt)"
                fix = f"write {self.labels_file} with one class name per line for ids 0..{max(ids)}"
            raise DataError(
                f"mask {path} holds class ids {_id_list(ids)} beyond {listed}, which cover ids "
                f"0..{n - 1} ({VOID_LABEL} = void); {fix}"
            )
        return mask


def _id_list(ids: list[int]) -> str:
    """``0..6`` for a run of consecutive ids, else the ids joined by commas."""
    if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids))

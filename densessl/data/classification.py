"""Image-level classification datasets: PASCAL VOC 2007 (multi-label) and class-per-folder trees.

:class:`VOC07Classification` reads the public VOC 2007 layout::

    VOCdevkit/VOC2007/
      JPEGImages/<stem>.jpg
      Annotations/<stem>.xml                  (not needed for classification)
      ImageSets/Main/<split>.txt              one stem per line
      ImageSets/Main/<cls>_<split>.txt        "<stem> <label>", label 1 present, -1 absent,
                                              0 present only as "difficult" objects

and yields ``(image, labels)`` with ``labels`` an int8 row of values in {1, -1, 0}, one per
class: PASCAL's 20 in the standard VOC order (:data:`VOC07_CLASSES`), or for a custom folder in
this layout the classes ``labels.txt`` lists or, without it, the ``<cls>_<split>.txt`` files name.

:class:`ImageFolderClassification` reads ``<root>/<class>/**/<image>`` (ImageNet style, class
names sorted) and yields ``(image, class_index)``.

Both are also :class:`~densessl.data.base.ImageSource` objects (``load``, ``describe``) and expose
``labels`` as one array, so protocols need not decode images to learn the labels.

:func:`write_voc07_fixture` and :func:`write_image_folder_fixture` write tiny procedural
datasets in these layouts, in which the class of an image can be learned from its content
(one colour and shape per class): enough for end-to-end checks in seconds.
"""

from __future__ import annotations

import colorsys
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .base import DataError, checked_index
from .sources import FileListSource, FolderSource, PackedPaths, decode_image
from .voc import VOC_CLASSES

__all__ = [
    "VOC07_CLASSES",
    "ImageFolderClassification",
    "VOC07Classification",
    "class_colour",
    "find_voc07_root",
    "voc07_class_names",
    "write_image_folder_fixture",
    "write_voc07_fixture",
]

#: The 20 PASCAL VOC object classes in the standard (alphabetical devkit) order.
VOC07_CLASSES: tuple[str, ...] = tuple(VOC_CLASSES[1:])


def find_voc07_root(root: str | os.PathLike) -> Path:
    """Locate the ``VOC2007`` folder given itself, ``VOCdevkit``, or the folder holding ``VOCdevkit``."""
    root = Path(root).expanduser()
    candidates = (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007")
    for candidate in candidates:
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"no PASCAL VOC 2007 folder (with ImageSets/Main/) found; tried {tried}")


def _read_label_file(path: Path) -> dict[str, int]:
    labels: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
            raise DataError(f"{path}:{number}: expected '<image> 1|-1|0', got {line.strip()!r}")
        labels[fields[0]] = int(fields[1])
    return labels


def voc07_class_names(root: Path, split: str) -> list[str]:
    """The classes of a VOC07-layout folder: ``labels.txt`` when present, else those named by
    ``ImageSets/Main/<class>_<split>.txt``.

    Discovered classes are sorted, except that exactly PASCAL's 20 keep :data:`VOC07_CLASSES`
    order (the same order as it happens, but stated rather than relied upon). A strict subset of
    PASCAL's 20 is taken for PASCAL with files missing, and raises :class:`DataError`.
    """
    listed = root / "labels.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if not names:
            raise DataError(f"class list {listed} is empty")
        return names
    main = root / "ImageSets" / "Main"
    suffix = f"_{split}.txt"
    found = sorted(p.name[: -len(suffix)] for p in main.glob(f"*{suffix}") if len(p.name) > len(suffix))
    if not found:
        available = sorted({p.stem.rsplit("_", 1)[1] for p in main.glob("*_*.txt")})
        raise DataError(
            f"the class label files of split {split!r} (<class>{suffix}) are missing from {main}; "
            f"splits with labels: {', '.join(available) or 'none'}"
        )
    if set(found) < set(VOC07_CLASSES):
        # most likely PASCAL VOC 2007 with files lost, rather than a custom set of PASCAL names:
        # scoring the rest silently would report a mAP over fewer classes than the benchmark's
        lost = [main / f"{name}{suffix}" for name in VOC07_CLASSES if name not in found]
        raise DataError(
            f"{len(lost)} of PASCAL VOC's 20 class label files of split {split!r} are missing, e.g. "
            f"{lost[0]}; for a data set of only the {len(found)} classes found, list them in {listed}"
        )
    return list(VOC07_CLASSES) if set(found) == set(VOC07_CLASSES) else found


class VOC07Classification:
    """One split of PASCAL VOC 2007-layout image classification (multi-label).

    ``root`` may be the ``VOC2007`` folder, ``VOCdevkit`` or the folder holding ``VOCdevkit``.
    The classes are those ``labels.txt`` lists (one name per line) or, without it, those the
    split's ``ImageSets/Main/<class>_<split>.txt`` files name (see :func:`voc07_class_names`):
    PASCAL's 20 for PASCAL VOC 2007, any set for a custom folder in the same layout.
    Items are ``(image, labels)``: an RGB uint8 (H, W, 3) array and a copy of the int8 row of
    :attr:`labels` (1 present, -1 absent, 0 difficult). The image list is ``<split>.txt`` when
    it exists, else the first class file's order; every class file must list exactly those
    images.
    """

    def __init__(self, root: str | os.PathLike, split: str = "trainval") -> None:
        self.root = find_voc07_root(root)
        self.split = split
        main = self.root / "ImageSets" / "Main"
        self.classes: list[str] = voc07_class_names(self.root, split)
        class_files = [main / f"{name}_{split}.txt" for name in self.classes]
        missing = [p for p in class_files if not p.is_file()]
        if missing:
            available = sorted({p.stem.rsplit("_", 1)[1] for p in main.glob(f"{self.classes[0]}_*.txt")})
            raise DataError(
                f"{len(missing)} class label file(s) of split {split!r} are missing, e.g. {missing[0]}; "
                f"splits with labels: {', '.join(available) or 'none'}"
            )
        per_class = [_read_label_file(p) for p in class_files]
        split_file = main / f"{split}.txt"
        if split_file.is_file():
            stems = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        else:
            stems = list(per_class[0])
        if not stems:
            raise DataError(f"split {split!r} of {self.root} lists no images")
        labels = np.empty((len(stems), len(self.classes)), dtype=np.int8)
        for c, (path, table) in enumerate(zip(class_files, per_class, strict=True)):
            if len(table) != len(stems):
                raise DataError(f"{path} lists {len(table)} images but split {split!r} has {len(stems)}")
            try:
                labels[:, c] = [table[stem] for stem in stems]
            except KeyError as exc:
                raise DataError(f"{path} has no label for image {exc.args[0]}") from None
        self.stems: list[str] = stems
        #: (N, num_classes) int8 labels in {1, -1, 0}, columns in :attr:`classes` order
        self.labels: np.ndarray = labels
        self.image_dir = self.root / "JPEGImages"
        if not self.image_dir.is_dir():
            raise DataError(f"image folder {self.image_dir} is missing")
        absent = [p for p in map(self.image_path, range(len(self))) if not p.is_file()]
        if absent:
            raise DataError(f"{len(absent)} image file(s) of split {split!r} are missing, e.g. {absent[0]}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.stems)

    def _index(self, index: int) -> int:
        return checked_index(index, len(self.stems), f"images in split {self.split!r}")

    def image_path(self, index: int) -> Path:
        return self.image_dir / f"{self.stems[self._index(index)]}.jpg"

    def load(self, index: int) -> np.ndarray:
        """The RGB image only (``ImageSource`` protocol)."""
        return decode_image(self.image_path(index))

    def describe(self, index: int) -> str:
        return str(self.image_path(index))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load(index), self.labels[self._index(index)].copy()


class ImageFolderClassification(FileListSource):
    """Single-label images stored as ``<root>/<class name>/**/<image>``.

    Class folders are the non-hidden sub-folders of ``root``, in sorted name order; the class
    index is the position in :attr:`classes`. Images are searched recursively inside each class
    folder (sorted paths); files directly in ``root`` are not part of any class and are ignored.
    Items are ``(image, class_index)``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a directory")
        with os.scandir(self.root) as entries:
            names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
        if not names:
            raise DataError(f"{self.root} has no class sub-folders (expected <root>/<class>/<image>)")
        relative: list[str] = []
        labels: list[int] = []
        for index, name in enumerate(names):
            try:
                found = FolderSource(self.root / name)
            except DataError:
                raise DataError(f"class folder {self.root / name} contains no images") from None
            relative.extend(f"{name}/{found.paths.relative(i)}" for i in range(len(found)))
            labels.extend([index] * len(found))
        self.classes: list[str] = names
        self.paths = PackedPaths(self.root, relative)
        #: (N,) int64 class indices
        self.labels: np.ndarray = np.asarray(labels, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        image = self.load(index)
        if index < 0:
            index += len(self)
        return image, int(self.labels[index])


# --------------------------------------------------------------------------- fixtures


def class_colour(index: int, num_classes: int) -> tuple[int, int, int]:
    """A saturated RGB colour for class ``index``: hues spread around the circle, two brightnesses."""
    hue = (index * 0.618033988749895) % 1.0 if num_classes > 12 else index / max(num_classes, 1)
    value = 0.95 if index % 2 == 0 or num_classes <= 12 else 0.6
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, value)
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    grey = rng.integers(100, 156)
    noise = rng.normal(0.0, 8.0, size=(size, size, 1))
    pixels = np.clip(grey + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
    return Image.fromarray(pixels, "RGB")


def _draw_object(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], class_index: int, colour: tuple[int, int, int]
) -> None:
    # the shape is a second cue besides the colour: ellipses for even classes, boxes for odd ones
    if class_index % 2 == 0:
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)


def _random_box(rng: np.random.Generator, size: int, low: float, high: float) -> tuple[int, int, int, int]:
    side = max(3, int(size * rng.uniform(low, high)))
    x0 = int(rng.integers(0, size - side + 1))
    y0 = int(rng.integers(0, size - side + 1))
    return x0, y0, x0 + side - 1, y0 + side - 1


def _annotation_xml(
    stem: str, size: int, objects: list[tuple[str, bool, tuple[int, int, int, int]]]
) -> bytes:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC2007"
    ET.SubElement(ann, "filename").text = f"{stem}.jpg"
    sz = ET.SubElement(ann, "size")
    ET.SubElement(sz, "width").text = str(size)
    ET.SubElement(sz, "height").text = str(size)
    ET.SubElement(sz, "depth").text = "3"
    ET.SubElement(ann, "segmented").text = "0"
    for name, difficult, (x0, y0, x1, y1) in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if difficult else "0"
        bb = ET.SubElement(obj, "bndbox")
        # VOC boxes are 1-based inclusive pixel coordinates
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1 + 1), ("ymax", y1 + 1)):
            ET.SubElement(bb, tag).text = str(value)
    return ET.tostring(ann, encoding="utf-8")


def write_voc07_fixture(
    root: str | os.PathLike,
    *,
    n_train: int = 30,
    n_val: int = 30,
    n_test: int = 40,
    image_size: int = 48,
    max_extra_objects: int = 2,
    difficult_prob: float = 0.15,
    seed: int = 0,
) -> Path:
    """Write a tiny VOC 2007 classification layout under ``root/VOCdevkit/VOC2007``; return that folder.

    Image ``i`` of a split always holds a clearly visible object of class ``i % 20`` (so every
    class is present in every split of at least 20 images) plus up to ``max_extra_objects``
    others. Each extra object is "difficult" with probability ``difficult_prob`` and then drawn
    small. Objects are filled in their class colour (:func:`class_colour`), ellipses for even
    classes and rectangles for odd ones. ``Annotations/<stem>.xml`` list every object with its
    ``<difficult>`` flag, and ``ImageSets/Main/<cls>_<split>.txt`` agree with them: 1 when a
    non-difficult object of the class is present, 0 when only difficult ones are, -1 otherwise.
    Splits: ``train``, ``val``, ``trainval`` (= train + val) and ``test``.
    """
    if min(n_train, n_val, n_test) < 1:
        raise ValueError("every split needs at least one image")
    if image_size < 16:
        raise ValueError("image_size must be at least 16 pixels")
    voc = Path(root).expanduser() / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_cls = len(VOC07_CLASSES)
    split_stems: dict[str, list[str]] = {}
    split_labels: dict[str, list[np.ndarray]] = {}
    counter = 0
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        stems, rows = [], []
        for i in range(count):
            counter += 1
            stem = f"{counter:06d}"
            canvas = _background(rng, image_size)
            draw = ImageDraw.Draw(canvas)
            objects: list[tuple[str, bool, tuple[int, int, int, int]]] = []
            main_class = i % n_cls
            classes = [main_class]
            n_extra = int(rng.integers(0, max_extra_objects + 1))
            others = [c for c in range(n_cls) if c != main_class]
            classes += [int(c) for c in rng.choice(others, size=n_extra, replace=False)]
            for k, c in enumerate(classes):
                difficult = k > 0 and rng.random() < difficult_prob
                low, high = (0.1, 0.18) if difficult else (0.3, 0.5)
                box = _random_box(rng, image_size, low, high)
                objects.append((VOC07_CLASSES[c], difficult, box))
            # big objects first, difficult (small) ones on top so that they stay visible
            for name, _, box in sorted(objects, key=lambda o: o[1]):
                c = VOC07_CLASSES.index(name)
                _draw_object(draw, box, c, class_colour(c, n_cls))
            row = np.full(n_cls, -1, dtype=np.int8)
            for name, difficult, _ in objects:
                c = VOC07_CLASSES.index(name)
                if not difficult:
                    row[c] = 1
                elif row[c] != 1:
                    row[c] = 0
            canvas.save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
            (voc / "Annotations" / f"{stem}.xml").write_bytes(_annotation_xml(stem, image_size, objects))
            stems.append(stem)
            rows.append(row)
        split_stems[split] = stems
        split_labels[split] = rows
    split_stems["trainval"] = split_stems["train"] + split_stems["val"]
    split_labels["trainval"] = split_labels["train"] + split_labels["val"]
    main = voc / "ImageSets" / "Main"
    for split, stems in split_stems.items():
        (main / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        table = np.stack(split_labels[split])
        for c, name in enumerate(VOC07_CLASSES):
            lines = "".join(f"{s} {int(v):2d}\n" for s, v in zip(stems, table[:, c], strict=True))
            (main / f"{name}_{split}.txt").write_text(lines)
    return voc


def write_image_folder_fixture(
    root: str | os.PathLike,
    classes: Sequence[str] = ("circle", "square", "wide", "tall", "small"),
    per_class: int = 8,
    *,
    image_size: int = 40,
    seed: int = 0,
) -> Path:
    """Write ``root/<class>/[sub/]<n>.jpg`` images whose class shows in colour and shape; return ``root``.

    Each class has its own colour (:func:`class_colour`) and object shape, drawn at a random
    place and size on a noisy grey background. Every other image goes into a ``sub/`` folder
    so that the recursive search of :class:`ImageFolderClassification` is exercised.
    """
    if not classes or per_class < 1:
        raise ValueError("need at least one class and one image per class")
    if len(set(classes)) != len(classes):
        raise ValueError("class names must be distinct")
    root = Path(root).expanduser()
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        colour = class_colour(c, len(classes))
        for i in range(per_class):
            folder = root / name / ("sub" if i % 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            canvas = _background(rng, image_size)
            _draw_object(ImageDraw.Draw(canvas), _random_box(rng, image_size, 0.6, 0.9), c, colour)
            canvas.save(folder / f"{i:04d}.jpg", quality=95)
    return root

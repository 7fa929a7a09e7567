"""Readers for the semantic segmentation sets the dense probes score on, and tiny fixture writers.

Every reader follows the item contract of :class:`~densessl.data.voc.VOCSegmentation`:
``len(ds)``, ``ds[i] -> (image, mask)`` (RGB uint8 (H, W, 3) and uint8 (H, W) class ids with
255 = ignore), ``num_classes``, ``class_names``, ``load(i)``, ``load_mask(i)`` and
``describe(i)``. Masks are read as the PNG's indices (palette indices for mode 'P', values for
mode 'L'), then translated by the set's label convention:

* :class:`ADE20K` (``ADEChallengeData2016``): annotations hold 0 = "other" and 1..150. With
  ``reduce_zero_label=True`` (mmseg's convention, the default) 0 becomes 255 and k becomes k-1,
  giving 150 classes; with ``False`` the 151 raw values are kept.
* :class:`Cityscapes` (fine annotations): ``*_gtFine_labelIds.png`` (ids 0..33, -1 for the
  licence plate) are mapped to the 19 train ids 0..18, every other id to 255, by the table of
  cityscapesscripts' ``labels.py``. ``masks="labelTrainIds"`` reads the pre-converted
  ``*_gtFine_labelTrainIds.png`` instead.
* :class:`COCOStuff`: the mmseg COCO-Stuff164k layout, ``*_labelTrainIds.png`` with 171 classes
  0..170 and 255. The 27-class coarse variant (12 thing + 15 stuff super-categories) is not
  offered: the specification names it but gives no fine-to-coarse table, so it cannot be
  written down reliably here. Leopart's own COCO layout (stuff pixel maps and panoptic semantic
  maps) is not read either, for the same reason.
* :class:`LeopartVOC`: the "pre-cut" PASCAL VOC layout of MaskContrast, Leopart and
  Hummingbird (``images/``, ``SegmentationClass/``, ``SegmentationClassAug/``,
  ``sets/{train,trainaug,val}.txt``). :func:`voc_segmentation` adds the mmseg ``aug`` split to
  the devkit layout.

Folder problems raise :class:`~densessl.data.base.DataError` with one sentence; an undecodable
image raises :class:`~densessl.data.base.CorruptImageError` when it is read; a mask value
outside the classes (after translation) raises ``DataError``.

The ``write_*_fixture`` functions write a few small images in each exact layout (file names,
image formats, PNG modes and label values) for tests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DataError, ImageMaskPairs, checked_index
from .sources import decode_image
from .voc import VOC_CLASSES, VOID_LABEL, VOCSegmentation, find_voc_root, read_label_png

__all__ = [
    "ADE20K",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_TRAIN_IDS",
    "COCOStuff",
    "Cityscapes",
    "LeopartVOC",
    "SegmentationFolder",
    "voc_segmentation",
    "write_ade20k_fixture",
    "write_cityscapes_fixture",
    "write_cocostuff_fixture",
    "write_leopart_voc_fixture",
]

IGNORE = VOID_LABEL

# Cityscapes labelId -> trainId (cityscapesscripts labels.py); ids absent here are ignored.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)


def _lut(pairs: dict[int, int], default: int = IGNORE) -> np.ndarray:
    table = np.full(256, default, dtype=np.uint8)
    for src, dst in pairs.items():
        table[src] = dst
    return table


class SegmentationFolder(ImageMaskPairs):
    """``(image, mask)`` pairs from parallel lists of image and mask files.

    ``lut`` (256 uint8 entries), when given, translates every mask value. After translation a
    mask may only hold ``0 .. num_classes - 1`` and 255; anything else raises ``DataError``.
    """

    def __init__(
        self,
        name: str,
        split: str,
        images: Sequence[Path],
        masks: Sequence[Path],
        class_names: Sequence[str],
        lut: np.ndarray | None = None,
    ) -> None:
        if len(images) != len(masks):
            raise ValueError("images and masks must pair up")
        if not images:
            raise DataError(f"{name} split {split!r} holds no images")
        missing = [p for p in masks if not p.is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} mask file(s) of {name} split {split!r} are missing, e.g. {missing[0]}"
            )
        self.name = name
        self.split = split
        self.images = list(images)
        self.masks = list(masks)
        self.class_names = list(class_names)
        self.lut = lut

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def _index(self, index: int) -> int:
        return checked_index(index, len(self.images), f"images in {self.name} split {self.split!r}")

    def image_path(self, index: int) -> Path:
        return self.images[self._index(index)]

    def mask_path(self, index: int) -> Path:
        return self.masks[self._index(index)]

    def load(self, index: int) -> np.ndarray:
        """The RGB image only (``ImageSource`` protocol)."""
        return decode_image(self.image_path(index))

    def load_mask(self, index: int) -> np.ndarray:
        """The (H, W) uint8 class-id mask in this reader's convention; 255 = ignore."""
        path = self.mask_path(index)
        raw = read_label_png(path)
        mask = self.lut[raw] if self.lut is not None else raw
        bad = (mask >= self.num_classes) & (mask != IGNORE)
        if bad.any():
            value = int(raw[bad][0])
            raise DataError(
                f"mask {path} holds label {value}, outside the {self.num_classes} classes of {self.name}"
            )
        return mask


def _find_root(root: str | os.PathLike, nested: str, required: Sequence[str], what: str) -> Path:
    root = Path(root).expanduser()
    candidates = (root, root / nested)
    for candidate in candidates:
        if all((candidate / sub).is_dir() for sub in required):
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise DataError(f"no {what} folder (with {', '.join(r + '/' for r in required)}) found at {tried}")


def _split_dir(base: Path, split: str, aliases: dict[str, str], what: str) -> tuple[str, Path]:
    name = aliases.get(split, split)
    folder = base / name
    if not folder.is_dir():
        available = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise DataError(
            f"{what} split folder {folder} is missing; available: {', '.join(available) or 'none'}"
        )
    return name, folder


class ADE20K(SegmentationFolder):
    """ADE20K SceneParsing (``ADEChallengeData2016``), ``split`` "training"/"validation" (or train/val).

    ``root`` is ``ADEChallengeData2016`` or the folder holding it. Images are
    ``images/<split>/*.jpg``, masks ``annotations/<split>/<stem>.png`` (mode 'L', 0 = other,
    1..150). Class names come from ``objectInfo150.txt`` when present.
    """

    def __init__(
        self, root: str | os.PathLike, split: str = "training", reduce_zero_label: bool = True
    ) -> None:
        self.root = _find_root(root, "ADEChallengeData2016", ("images", "annotations"), "ADE20K")
        name, folder = _split_dir(
            self.root / "images", split, {"train": "training", "val": "validation"}, "ADE20K"
        )
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
        masks = [self.root / "annotations" / name / f"{p.stem}.png" for p in images]
        names = _ade_names(self.root / "objectInfo150.txt")
        self.reduce_zero_label = reduce_zero_label
        if reduce_zero_label:
            lut = (np.arange(256) - 1).clip(0).astype(np.uint8)
            lut[0] = lut[255] = IGNORE
        else:
            names = ["other", *names]
            lut = None
        super().__init__("ADE20K", name, images, masks, names, lut)


def _ade_names(info: Path) -> list[str]:
    """The 150 names of ``objectInfo150.txt`` (Idx, Ratio, Train, Val, Name; tab separated)."""
    if not info.is_file():
        return [f"class_{i}" for i in range(1, 151)]
    rows = [line.split("\t") for line in info.read_text().splitlines()[1:] if line.strip()]
    names = [row[-1].strip() for row in rows]
    if len(names) != 150:
        raise DataError(f"{info} lists {len(names)} classes, expected 150")
    return names


class Cityscapes(SegmentationFolder):
    """Cityscapes fine annotations, ``split`` "train"/"val"/"test", 19 train-id classes.

    ``root`` holds ``leftImg8bit/`` and ``gtFine/`` (or is their parent's ``cityscapes``).
    Images are ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png``; masks are
    ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png`` mapped through
    :data:`CITYSCAPES_TRAIN_IDS`, or with ``masks="labelTrainIds"`` the converted
    ``<name>_gtFine_labelTrainIds.png`` read as they are.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", masks: str = "labelIds") -> None:
        if masks not in ("labelIds", "labelTrainIds"):
            raise ValueError(f"masks must be 'labelIds' or 'labelTrainIds', got {masks!r}")
        self.root = _find_root(root, "cityscapes", ("leftImg8bit", "gtFine"), "Cityscapes")
        name, folder = _split_dir(self.root / "leftImg8bit", split, {}, "Cityscapes")
        suffix = "_leftImg8bit.png"
        images = sorted(p for p in folder.glob("*/*" + suffix))
        mask_files = [
            self.root / "gtFine" / name / p.parent.name / (p.name[: -len(suffix)] + f"_gtFine_{masks}.png")
            for p in images
        ]
        lut = _lut(CITYSCAPES_TRAIN_IDS) if masks == "labelIds" else None
        super().__init__("Cityscapes", name, images, mask_files, CITYSCAPES_CLASSES, lut)


class COCOStuff(SegmentationFolder):
    """COCO-Stuff164k in the mmseg layout, ``split`` "train2017"/"val2017" (or train/val).

    ``root`` is ``coco_stuff164k`` or the folder holding it. Images are
    ``images/<split>/<id>.jpg``, masks ``annotations/<split>/<id>_labelTrainIds.png`` (mode 'L',
    171 classes 0..170, 255 = unlabelled). Only ``classes=171`` exists: see the module docstring.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train2017", classes: int = 171) -> None:
        if classes != 171:
            raise DataError(
                f"COCO-Stuff with {classes} classes is not available: only the 171-class labelTrainIds "
                "convention is implemented (the specification gives no 27-class coarse mapping)"
            )
        self.root = _find_root(root, "coco_stuff164k", ("images", "annotations"), "COCO-Stuff164k")
        name, folder = _split_dir(
            self.root / "images", split, {"train": "train2017", "val": "val2017"}, "COCO-Stuff"
        )
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
        masks = [self.root / "annotations" / name / f"{p.stem}_labelTrainIds.png" for p in images]
        super().__init__("COCO-Stuff", name, images, masks, [f"cocostuff_{i}" for i in range(171)])


class LeopartVOC(SegmentationFolder):
    """The pre-cut PASCAL VOC layout of MaskContrast / Leopart / Hummingbird.

    ``root`` (often named ``VOCSegmentation``) holds ``images/<stem>.jpg``,
    ``SegmentationClass/<stem>.png``, ``SegmentationClassAug/<stem>.png`` and
    ``sets/<split>.txt``. The ``trainaug`` split reads ``SegmentationClassAug`` (its SBD images
    have no ``SegmentationClass`` mask); every other split ``SegmentationClass``, unless
    ``mask_dir`` says otherwise. 21 VOC classes, 255 = void.
    """

    def __init__(self, root: str | os.PathLike, split: str = "trainaug", mask_dir: str | None = None) -> None:
        self.root = _find_root(root, "VOCSegmentation", ("images", "sets"), "pre-cut VOC")
        split_file = self.root / "sets" / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in (self.root / "sets").glob("*.txt"))
            raise DataError(
                f"split file {split_file} is missing; available splits: {', '.join(available) or 'none'}"
            )
        stems = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if mask_dir is None:
            mask_dir = "SegmentationClassAug" if split == "trainaug" else "SegmentationClass"
        images = [self.root / "images" / f"{s}.jpg" for s in stems]
        missing = [p for p in images if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} image file(s) of split {split!r} are missing, e.g. {missing[0]}")
        masks = [self.root / mask_dir / f"{s}.png" for s in stems]
        self.stems = stems
        super().__init__("pre-cut VOC", split, images, masks, VOC_CLASSES)


def voc_segmentation(root: str | os.PathLike, split: str) -> VOCSegmentation:
    """PASCAL VOC 2012 (devkit layout) with the SBD-augmented split as well.

    ``split`` "aug" or "trainaug" reads ``ImageSets/Segmentation/<split>.txt`` (mmseg's
    ``voc_aug.py`` writes ``aug.txt``; "trainaug" falls back to it) with the masks of
    ``SegmentationClassAug``; any other split is a plain :class:`VOCSegmentation`.
    """
    if split not in ("aug", "trainaug"):
        return VOCSegmentation(root, split)
    sets = find_voc_root(root) / "ImageSets" / "Segmentation"
    name = split if (sets / f"{split}.txt").is_file() else "aug"
    return VOCSegmentation(root, name, mask_dir="SegmentationClassAug")


# ----------------------------------------------------------------------------------------------
# fixtures in the exact public layouts
# ----------------------------------------------------------------------------------------------


def _label_map(
    rng: np.random.Generator, size: tuple[int, int], labels: Sequence[int], n_rects: int
) -> np.ndarray:
    """A (h, w) uint8 map: the first label as backdrop, then rectangles of random labels."""
    h, w = size
    out = np.full((h, w), labels[0], dtype=np.uint8)
    for _ in range(n_rects):
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        y1, x1 = int(rng.integers(y0 + 4, h + 1)), int(rng.integers(x0 + 4, w + 1))
        out[y0:y1, x0:x1] = labels[int(rng.integers(0, len(labels)))]
    return out


def _void_band(mask: np.ndarray) -> np.ndarray:
    """``mask`` with 255 on every pixel whose 4-neighbourhood holds another label (a 1-2 px band)."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    out = mask.copy()
    out[edge] = IGNORE
    return out


def _image_for(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """An RGB image whose colour depends on the label, plus noise."""
    palette = (np.arange(256)[:, None] * np.array([37, 91, 151])[None, :]) % 256
    image = palette[mask].astype(np.int64) + rng.integers(-20, 21, (*mask.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _save_l(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L").save(path)


def _save_p(mask: np.ndarray, path: Path) -> None:
    from .synthetic import save_palette_png

    save_palette_png(mask, path)


def _save_jpg(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, quality=95)


def write_ade20k_fixture(
    out_dir: str | os.PathLike,
    n_train: int = 3,
    n_val: int = 2,
    size: tuple[int, int] = (40, 48),
    seed: int = 0,
) -> Path:
    """Write ``ADEChallengeData2016`` under ``out_dir`` and return it.

    ``images/{training,validation}/ADE_{train,val}_<8 digits, from 1>.jpg``, masks of the same
    stem in ``annotations/`` (mode 'L', 0..150, with 0 present in every mask),
    ``objectInfo150.txt`` and ``sceneCategories.txt``.
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "ADEChallengeData2016"
    scenes = []
    for split, tag, count in (("training", "train", n_train), ("validation", "val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            stem = f"ADE_{tag}_{i:08d}"
            mask = _label_map(rng, size, [0, 1, 3, 12, 150, int(rng.integers(1, 151))], 4)
            mask[0, 0] = 0  # "other" must occur to exercise reduce_zero_label
            _save_jpg(_image_for(rng, mask), root / "images" / split / f"{stem}.jpg")
            _save_l(mask, root / "annotations" / split / f"{stem}.png")
            scenes.append(f"{stem} scene_{i % 3}\n")
    rows = ["Idx\tRatio\tTrain\tVal\tName\n"]
    rows += [f"{i}\t0.0010\t10\t1\tobject{i};thing{i}\n" for i in range(1, 151)]
    (root / "objectInfo150.txt").write_text("".join(rows))
    (root / "sceneCategories.txt").write_text("".join(scenes))
    return root


def write_cityscapes_fixture(
    out_dir: str | os.PathLike,
    n_train: int = 2,
    n_val: int = 2,
    size: tuple[int, int] = (32, 64),
    seed: int = 0,
) -> Path:
    """Write a ``cityscapes`` folder under ``out_dir`` and return it.

    ``leftImg8bit/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png`` (RGB PNG) and,
    in ``gtFine/<split>/<city>/``, ``..._gtFine_labelIds.png`` (mode 'L', ids 0..33 including
    ignored ones), ``..._gtFine_labelTrainIds.png`` (mode 'L', 0..18 and 255) and
    ``..._gtFine_instanceIds.png`` (16-bit; id * 1000 + k for instances). Train images come from
    two cities, val images from one.
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "cityscapes"
    lut = _lut(CITYSCAPES_TRAIN_IDS)
    ids = [7, 0, 1, 4, 8, 9, 11, 14, 17, 21, 23, 24, 26, 29, 33]
    for split, cities, count in (("train", ("aachen", "bochum"), n_train), ("val", ("frankfurt",), n_val)):
        for i in range(count):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            label_ids = _label_map(rng, size, ids, 6)
            label_ids[-6:, -10:] = 26  # a car, so that every image has an instance
            Image.fromarray(_image_for(rng, label_ids)).save(img_dir / f"{stem}_leftImg8bit.png")
            _save_l(label_ids, gt_dir / f"{stem}_gtFine_labelIds.png")
            _save_l(lut[label_ids], gt_dir / f"{stem}_gtFine_labelTrainIds.png")
            instances = label_ids.astype(np.uint16)
            instances[label_ids >= 24] = label_ids[label_ids >= 24].astype(np.uint16) * 1000
            Image.fromarray(instances).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
    return root


def write_cocostuff_fixture(
    out_dir: str | os.PathLike,
    n_train: int = 3,
    n_val: int = 2,
    size: tuple[int, int] = (40, 48),
    seed: int = 0,
) -> Path:
    """Write ``coco_stuff164k`` (mmseg layout) under ``out_dir`` and return it.

    ``images/{train2017,val2017}/<12-digit id>.jpg`` and
    ``annotations/{train2017,val2017}/<id>_labelTrainIds.png`` (mode 'L', 0..170, 255).
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "coco_stuff164k"
    next_id = 9
    for split, count in (("train2017", n_train), ("val2017", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            stem = f"{next_id:012d}"
            next_id += int(rng.integers(1, 40))
            mask = _label_map(rng, size, [0, 14, 80, 170, IGNORE, int(rng.integers(0, 171))], 5)
            _save_jpg(_image_for(rng, mask), root / "images" / split / f"{stem}.jpg")
            _save_l(mask, root / "annotations" / split / f"{stem}_labelTrainIds.png")
    return root


def write_leopart_voc_fixture(
    out_dir: str | os.PathLike,
    n_train: int = 3,
    n_sbd: int = 2,
    n_val: int = 2,
    size: tuple[int, int] = (40, 48),
    seed: int = 0,
) -> Path:
    """Write the pre-cut VOC layout as ``out_dir/VOCSegmentation`` and return it.

    ``images/<stem>.jpg`` for every stem; ``SegmentationClass/<stem>.png`` (mode 'P', VOC colour
    map, 0..20 with a 255 band around objects) for the VOC train and val stems;
    ``SegmentationClassAug/<stem>.png`` (mode 'L') for the trainaug stems, i.e. the VOC train
    stems (same values) plus ``n_sbd`` SBD-only stems (no void band, as SBD has none);
    ``sets/{train,trainaug,val}.txt``.
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "VOCSegmentation"
    for sub in ("images", "SegmentationClass", "SegmentationClassAug", "sets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[str]] = {"train": [], "trainaug": [], "val": []}
    serial = 0
    for group, count in (("train", n_train), ("sbd", n_sbd), ("val", n_val)):
        for _ in range(count):
            serial += 1
            stem = f"2008_{serial:06d}"
            objects = _label_map(rng, size, [0, *rng.choice(np.arange(1, 21), 3, replace=False).tolist()], 3)
            mask = objects if group == "sbd" else _void_band(objects)
            _save_jpg(_image_for(rng, objects), root / "images" / f"{stem}.jpg")
            if group != "sbd":
                _save_p(mask, root / "SegmentationClass" / f"{stem}.png")
            if group != "val":
                _save_l(mask, root / "SegmentationClassAug" / f"{stem}.png")
                sets["trainaug"].append(stem)
            if group != "sbd":
                sets[group].append(stem)
    for name, stems in sets.items():
        (root / "sets" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    return root

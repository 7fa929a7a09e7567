"""The synthetic scenes as image-level classification sets, for the global protocols (spec C5.4).

- :func:`write_synthetic_voc07`: the VOC 2007 classification layout (``JPEGImages``,
  ``ImageSets/Main/<split>.txt`` and ``<class>_<split>.txt``, ``labels.txt``) with multi-label
  *presence* labels: 1 when a class covers at least ``present_fraction`` of the image, 0
  ("difficult") when it is visible but smaller, -1 when absent. ``svm-voc07`` reads it.
- :func:`write_synthetic_folders`: ``train/<class>/`` and ``val/<class>/`` folders labelled by the
  class of the largest visible object; ``knn`` and ``linear`` read them.
- :class:`PresenceScenes` and :class:`LargestObjectScenes`: the same labels in memory, on the
  rendered (not JPEG-compressed) images, for protocols run without writing files
  (``densessl compare``).

Images are scenes of the held-out splits (``val`` for training, ``test`` for testing), so a
backbone pre-trained on the ``train`` split has seen none of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from densessl.data.synthetic import SynthConfig, class_names, render_scene, resolve_config, scene_seed

#: which scene split each classification split is drawn from
SOURCE_SPLITS = {"trainval": "val", "test": "test", "train": "val", "val": "test"}


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    # no chroma subsampling: 4:2:0 would smear the 2-3 px colour textures
    Image.fromarray(image).save(path, quality=95, subsampling=0)


def class_areas(class_mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the image covered by each object class 1..K (void and background excluded)."""
    counts = np.bincount(class_mask.reshape(-1), minlength=256)[1 : num_classes + 1]
    return counts / class_mask.size


def presence_labels(class_mask: np.ndarray, num_classes: int, present_fraction: float = 0.02) -> np.ndarray:
    """Per class 1..K: 1 when it covers at least ``present_fraction`` of the image, 0 (difficult)
    when visible but smaller, -1 when absent."""
    area = class_areas(class_mask, num_classes)
    return np.where(area >= present_fraction, 1, np.where(area > 0, 0, -1))


def largest_object(class_mask: np.ndarray, num_classes: int) -> int | None:
    """Index (0..K-1) of the object class covering the most pixels; None when none is visible."""
    area = class_areas(class_mask, num_classes)
    return None if area.max() == 0 else int(area.argmax())


class PresenceScenes(Sequence):
    """``(image, presence labels)`` of the first ``count`` scenes of ``split`` (see
    :func:`presence_labels`), what :func:`densessl.eval.classification.run_svm_voc07` reads."""

    def __init__(
        self, config: SynthConfig | str | None, split: str, count: int, present_fraction: float = 0.02
    ):
        self.config, self.split, self.count = resolve_config(config), split, count
        self.present_fraction = present_fraction
        self.class_names = class_names(self.config)[1:]
        self.labels = np.stack(
            [
                presence_labels(
                    render_scene(self.config, scene_seed(split, i))[1],
                    self.config.num_classes,
                    present_fraction,
                )
                for i in range(count)
            ]
        )

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):  # type: ignore[override]
        if not 0 <= index < self.count:
            raise IndexError(index)
        image, _, _ = render_scene(self.config, scene_seed(self.split, index))
        return image, self.labels[index]


class LargestObjectScenes(Sequence):
    """``(image, class index)`` of the scenes of ``split`` among the first ``count`` that show an
    object, labelled by the largest one, what :func:`densessl.eval.classification.run_knn` reads."""

    def __init__(self, config: SynthConfig | str | None, split: str, count: int):
        self.config, self.split = resolve_config(config), split
        self.class_names = class_names(self.config)[1:]
        self.items: list[tuple[int, int]] = []
        for i in range(count):
            _, class_mask, _ = render_scene(self.config, scene_seed(split, i))
            label = largest_object(class_mask, self.config.num_classes)
            if label is not None:
                self.items.append((i, label))
        self.labels = np.array([label for _, label in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):  # type: ignore[override]
        i, label = self.items[index]
        image, _, _ = render_scene(self.config, scene_seed(self.split, i))
        return image, label


def write_synthetic_voc07(
    out_dir: str | Path,
    config: SynthConfig | str | None = None,
    n_trainval: int = 600,
    n_test: int = 300,
    present_fraction: float = 0.02,
) -> Path:
    """Write the scenes in the VOC 2007 classification layout; return the ``VOC2007`` folder."""
    config = resolve_config(config)
    root = Path(out_dir) / "VOCdevkit" / "VOC2007"
    images, main = root / "JPEGImages", root / "ImageSets" / "Main"
    images.mkdir(parents=True, exist_ok=True)
    main.mkdir(parents=True, exist_ok=True)
    names = class_names(config)[1:]
    for split, count in (("trainval", n_trainval), ("test", n_test)):
        source = SOURCE_SPLITS[split]
        stems, rows = [], []
        for i in range(count):
            stem = f"{source}_{i:06d}"
            image, class_mask, _ = render_scene(config, scene_seed(source, i))
            _save_jpeg(image, images / f"{stem}.jpg")
            rows.append(presence_labels(class_mask, config.num_classes, present_fraction))
            stems.append(stem)
        (main / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        labels = np.stack(rows)
        for c, name in enumerate(names):
            lines = "".join(f"{stem} {int(v):2d}\n" for stem, v in zip(stems, labels[:, c], strict=True))
            (main / f"{name}_{split}.txt").write_text(lines)
    (root / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    meta = {"generator": "densessl.data.synthetic_sets", "config": config.to_dict(), "classes": names}
    meta |= {"present_fraction": present_fraction, "splits": {"trainval": n_trainval, "test": n_test}}
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


def write_synthetic_folders(
    out_dir: str | Path, config: SynthConfig | str | None = None, n_train: int = 600, n_val: int = 300
) -> Path:
    """Write ``train/`` and ``val/`` class-per-folder trees (largest visible object's class)."""
    config = resolve_config(config)
    root = Path(out_dir)
    names = class_names(config)[1:]
    for split, count in (("train", n_train), ("val", n_val)):
        source = SOURCE_SPLITS[split]
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, class_mask, _ = render_scene(config, scene_seed(source, i))
            label = largest_object(class_mask, config.num_classes)
            if label is None:
                continue  # no object visible: no label
            _save_jpeg(image, root / split / names[label] / f"{source}_{i:06d}.jpg")
    return root

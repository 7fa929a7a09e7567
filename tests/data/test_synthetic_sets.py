"""The synthetic scenes as classification sets: written in the public layouts, read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densessl.cli import main
from densessl.data.classification import ImageFolderClassification, VOC07Classification
from densessl.data.synthetic import SyntheticScenes, class_names, resolve_config
from densessl.data.synthetic_sets import class_areas, write_synthetic_folders, write_synthetic_voc07


def test_class_areas_count_object_pixels_only():
    mask = np.array([[0, 1, 1, 255], [2, 2, 2, 0]], dtype=np.uint8)
    assert np.allclose(class_areas(mask, 3), [2 / 8, 3 / 8, 0.0])


def test_voc07_layout_holds_presence_labels_of_the_held_out_scenes(tmp_path):
    root = write_synthetic_voc07(tmp_path, "easy", n_trainval=10, n_test=6, present_fraction=0.02)
    trainval, test = VOC07Classification(tmp_path, "trainval"), VOC07Classification(root, "test")
    config = resolve_config("easy")
    assert trainval.classes == class_names(config)[1:] and len(trainval) == 10 and len(test) == 6
    scenes = SyntheticScenes(config, "val", 10)
    for i in range(10):
        area = class_areas(scenes[i][1], config.num_classes)
        expected = np.where(area >= 0.02, 1, np.where(area > 0, 0, -1))
        assert np.array_equal(trainval.labels[i], expected)
    assert (trainval.labels == 1).any() and (trainval.labels == -1).any()
    assert trainval[0][0].shape == (config.image_size, config.image_size, 3)


def test_folders_are_labelled_by_the_largest_object_and_the_command_writes_them(tmp_path, capsys):
    root = write_synthetic_folders(tmp_path / "a", "easy", n_train=30, n_val=12)
    train = ImageFolderClassification(root / "train")
    config = resolve_config("easy")
    assert train.classes == sorted(class_names(config)[1:])
    scenes = SyntheticScenes(config, "val", 30)
    first = Path(train.path(0))
    index = int(first.stem.split("_")[1])
    largest = class_names(config)[1 + int(class_areas(scenes[index][1], config.num_classes).argmax())]
    assert first.parent.name == largest
    assert (
        main(["data", "synth-voc07", "--out", str(tmp_path / "b"), "--preset", "easy", "--trainval", "4"])
        == 0
    )
    assert '"trainval": 4' in capsys.readouterr().out


def test_in_memory_sets_carry_the_labels_written_to_disk(tmp_path):
    from PIL import Image

    from densessl.data.synthetic_sets import LargestObjectScenes, PresenceScenes

    root = write_synthetic_voc07(tmp_path / "voc", "easy", n_trainval=12, n_test=4)
    presence = PresenceScenes("easy", "val", 12)
    names = presence.class_names
    for c, name in enumerate(names):
        rows = (root / "ImageSets/Main" / f"{name}_trainval.txt").read_text().split("\n")[:-1]
        assert [int(r.split()[1]) for r in rows] == presence.labels[:, c].tolist()
    assert presence[3][1].tolist() == presence.labels[3].tolist() and presence[3][0].shape[2] == 3
    folders = write_synthetic_folders(tmp_path / "folders", "easy", n_train=12, n_val=2)
    largest = LargestObjectScenes("easy", "val", 12)
    on_disk = sorted((p.stem, names.index(p.parent.name)) for p in (folders / "train").glob("*/*.jpg"))
    assert on_disk == sorted((f"val_{i:06d}", label) for i, label in largest.items)
    image, label = largest[0]
    assert label == largest.labels[0]
    assert (
        Image.open(folders / "train" / names[label] / f"val_{largest.items[0][0]:06d}.jpg").size
        == image.shape[1::-1]
    )

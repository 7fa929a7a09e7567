"""The supervised ceiling: crops that keep image and labels aligned, masks read as the probes read
them, and a backbone that learns the scenes."""

from __future__ import annotations

import numpy as np
import torch

from densessl.config import load_config
from densessl.data.synthetic import SyntheticScenes, resolve_config
from densessl.demo import initial_backbone
from densessl.eval.supervised import labelled_crops, train_supervised
from tests.helpers import QUICK, TINY


def test_crops_keep_each_label_under_its_pixel():
    # 4 quadrants, class c painted with grey level 40 * (c + 1): labels readable from the image
    classes = torch.zeros(2, 64, 64, dtype=torch.uint8)
    classes[:, :32, 32:], classes[:, 32:, :32], classes[:, 32:, 32:] = 1, 2, 3
    classes[1] = classes[1].flip(-1)
    images = (40 * (classes.long() + 1)).to(torch.uint8)[:, None].repeat(1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    flips = 0
    for _ in range(20):
        crops, labels = labelled_crops(images, classes, 24, (0.2, 1.0), g)
        assert crops.shape == (2, 3, 24, 24) and labels.shape == (2, 24, 24) and labels.dtype == torch.int64
        pure = torch.isin(crops[:, 0].long(), torch.tensor([40, 80, 120, 160]))
        # wherever the bilinear image is a pure class colour, the nearest label is that class
        assert torch.equal(labels[pure], crops[:, 0].long()[pure] // 40 - 1)
        flips += int(labels[0, 0, 0] in (1, 3))
    assert 0 < flips < 20, "left-right mirroring happens, together for image and labels"


def test_whole_image_crops_are_the_probes_masks():
    scenes = resolve_config("easy")
    data = SyntheticScenes(scenes, "train", 4)
    images = torch.from_numpy(np.stack([data[i][0] for i in range(4)])).permute(0, 3, 1, 2)
    masks = torch.from_numpy(np.stack([data[i][1] for i in range(4)]))
    _, labels = labelled_crops(images, masks, scenes.image_size, (1.0, 1.0), torch.Generator().manual_seed(1))
    for label, mask in zip(labels, masks, strict=True):
        assert torch.equal(label, mask.long()) or torch.equal(label, mask.long().flip(-1))
    assert 255 in masks, "the ignore band of object borders reaches the loss as 255"


def test_training_learns_the_scenes_and_changes_the_backbone():
    config = load_config(QUICK, TINY)
    backbone = initial_backbone(config)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    trained, record = train_supervised(
        backbone, resolve_config("easy"), images=32, epochs=6, crop_size=32, batch_size=16, lr=0.1
    )
    assert trained is backbone and not trained.training
    assert record["losses"][-1] < record["losses"][0] * 0.9
    changed = [k for k, v in trained.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and any("conv" in k for k in changed)

"""The method contract's hooks: per-sample view targets and views checked against roles."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from densessl.config import load_config
from densessl.errors import ConfigError
from densessl.methods.base import Method, ViewRole
from densessl.training.trainer import Trainer, prepare_views
from densessl.views.dataset import EpochBatchSampler, MultiViewDataset, collate_views
from densessl.views.sampler import CropSpec, ViewSampler

ROOT = Path(__file__).resolve().parents[2]


class ArraySource:
    """Random images of varied shapes (picklable, for loader workers)."""

    def __init__(self, n: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 255, (40 + 7 * i, 60 - 3 * i, 3), dtype=np.uint8) for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        return self.images[index]

    def describe(self, index: int) -> str:
        return f"array:{index}"


def relative_centre(records, image_size, view: int) -> dict[str, torch.Tensor]:
    """Target: view ``view``'s box centre as a fraction of the source image, and the image size."""
    box = records[view].box
    height, width = image_size
    centre = torch.tensor([(box.left + box.width / 2) / width, (box.top + box.height / 2) / height])
    return {"centre": centre, "size": torch.tensor([height, width])}


SPECS = [
    CropSpec(size=16, scale=(0.3, 1.0)),
    CropSpec(size=16, scale=(0.3, 1.0)),
    CropSpec(size=8, scale=(0.05, 0.2), reference=1, rule="intersection", threshold=0.5),
    CropSpec(size=8, scale=(0.05, 0.2), reference=1, rule="intersection", threshold=0.5),
]


@pytest.mark.parametrize("workers", [0, 1])
def test_view_targets_are_computed_per_sample_and_reach_the_method_with_every_record_field(workers):
    dataset = MultiViewDataset(
        ArraySource(), ViewSampler(SPECS), seed=3, targets=partial(relative_centre, view=1)
    )
    batches = EpochBatchSampler(len(dataset), 4, 1, 0, seed=3, epochs=1)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_views, num_workers=workers)
    batch = next(iter(loader))
    views = prepare_views(
        batch, [_plain_view(s) for s in SPECS], torch.Generator(), torch.device("cpu"), False
    )
    assert [tuple(x.shape) for x in views.images] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 2
    assert views.references == (None, None, 1, 1)
    assert views.accepted.shape == (4, 4) and views.accepted.dtype == torch.bool
    assert set(views.targets) == {"centre", "size"}
    # the target of each sample is its own: recompute it from the geometry that came with it
    boxes = views.boxes[:, 1].double()
    heights, widths = views.image_sizes[:, 0].double(), views.image_sizes[:, 1].double()
    expected = torch.stack(
        [(boxes[:, 0] + boxes[:, 2] / 2) / widths, (boxes[:, 1] + boxes[:, 3] / 2) / heights], dim=1
    )
    torch.testing.assert_close(views.targets["centre"].double(), expected)
    assert torch.equal(views.targets["size"], views.image_sizes)
    assert len(set(map(tuple, views.targets["size"].tolist()))) > 1


def _plain_view(spec: CropSpec):
    from densessl.config import ViewConfig

    return ViewConfig(crop=spec)


class SmallCrops(Method):
    name = "small-crops"
    view_roles = (ViewRole("query"), ViewRole("key"), ViewRole("small", reference="key", repeat=True))


def test_a_recipe_playing_the_roles_passes():
    SmallCrops.check_views(SPECS)
    SmallCrops.check_views(SPECS[:3])


@pytest.mark.parametrize(
    "specs,message",
    [
        (SPECS[:2], "reads at least 3 views (query, key, small...); the recipe has 2"),
        (
            [SPECS[0], SPECS[1], CropSpec(size=8)],
            "views.2.crop.reference must be 1 (small is drawn to overlap key)",
        ),
        ([SPECS[0], SPECS[1], CropSpec(size=8, reference=0)], "views.2.crop.reference must be 1"),
        ([SPECS[0], CropSpec(size=16, reference=0), SPECS[2]], "views.1.crop.reference must be unset"),
    ],
)
def test_a_recipe_that_does_not_play_the_roles_is_one_line(specs, message):
    with pytest.raises(ConfigError) as info:
        SmallCrops.check_views(specs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_two_view_methods_refuse_a_third_view():
    from densessl.methods.densecl import DenseCL

    with pytest.raises(ConfigError, match="densecl reads 2 views"):
        DenseCL.check_views(SPECS[:3])


@pytest.mark.parametrize("method_name", ["slotcon", "mgc"])
def test_a_constrained_view_under_another_overlap_rule_is_one_line(method_name):
    from densessl.methods.mgc import MGC
    from densessl.methods.slotcon import SlotCon

    method, rule, other = {
        "slotcon": (SlotCon, "intersection", "iou"),
        "mgc": (MGC, "iou", "intersection"),
    }[method_name]
    first = CropSpec(size=16)
    method.check_views([first, CropSpec(size=16, reference=0, rule=rule)])
    with pytest.raises(ConfigError) as info:
        method.check_views([first, CropSpec(size=16, reference=0, rule=other)])
    message = str(info.value)
    assert f"views.1.crop.rule must be {rule!r}" in message and f"got {other!r}" in message
    assert "\n" not in message


def test_slotcon_without_its_overlap_constraint_stops_at_start_up(tmp_path):
    recipe = ROOT / "densessl/recipes/quick/slotcon_synthetic.yaml"
    config = load_config(recipe, ["views.1.crop.reference=null", "train.progress=false"])
    with pytest.raises(
        ConfigError, match=r"views.1.crop.reference must be 0 \(view2 is drawn to overlap view1\)"
    ):
        Trainer(config, tmp_path / "run").fit()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_light_state_lacks_only_the_named_buffers_and_loads_back():
    from densessl.methods.densecl import DenseCL, DenseCLConfig
    from tests.helpers import tiny_factory

    method = DenseCL(DenseCLConfig(queue_size=16, hidden_dim=8, dim=4), tiny_factory())
    method.light_state_exclude = ("dense_queue.",)
    light = method.checkpoint_state(light=True)
    assert set(method.state_dict()) - set(light) == {"dense_queue.keys", "dense_queue.ptr"}
    other = DenseCL(DenseCLConfig(queue_size=16, hidden_dim=8, dim=4), tiny_factory(seed=1))
    other.light_state_exclude = ("dense_queue.",)
    kept = other.dense_queue.keys.clone()
    assert other.load_checkpoint_state(light) == ["dense_queue.keys", "dense_queue.ptr"]
    assert torch.equal(other.dense_queue.keys, kept)
    assert torch.equal(other.queue.keys, method.queue.keys)
    del light["queue.keys"]
    with pytest.raises(RuntimeError, match="queue.keys"):
        other.load_checkpoint_state(light)


def test_the_backbone_factory_takes_model_overrides(monkeypatch):
    import densessl.training.trainer as trainer_module

    captured = {}
    monkeypatch.setattr(
        trainer_module, "build_method", lambda config, factory: captured.setdefault("f", factory)
    )
    recipe = ROOT / "densessl/recipes/quick/densecl_synthetic.yaml"
    trainer_module.build_model(load_config(recipe, ["model.width=0.25"]))
    default, wider = captured["f"](), captured["f"](width=0.5)
    assert default.out_channels == 128 and wider.out_channels == 256

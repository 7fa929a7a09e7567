"""Declared photometric pipelines: the colour chain unchanged, per-sample choices, uint8 before float,
and their recipe form in the strict config loader."""

from __future__ import annotations

import pytest
import torch

from densessl.augment import (
    MOCO_V2,
    SLOTCON_VIEW1,
    SLOTCON_VIEW2,
    AutoAugmentConfig,
    PhotometricChoice,
    PhotometricConfig,
    apply_autoaugment,
    apply_photometric,
    augment_view,
    check_pipeline,
    normalize,
    run_pipeline,
)
from densessl.config import ConfigError, apply_override, from_dict, to_dict

COLOUR_FIELDS = {"jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
GRAY_ONLY = PhotometricConfig(jitter_p=0.0, grayscale_p=1.0, blur_p=0.0)


def _crops(batch: int = 24, height: int = 20, width: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("config", [MOCO_V2, SLOTCON_VIEW1, SLOTCON_VIEW2])
def test_a_colour_view_is_bit_identical_to_the_former_trainer_path(config) -> None:
    crops = _crops(seed=1)
    g_old, g_new = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    before = normalize(apply_photometric(crops.float().div_(255.0), config, g_old))
    after = augment_view(crops, config, g_new)
    assert after.dtype == torch.float32
    assert torch.equal(after, before)
    # the generator is left in the same state: the next view's draws do not move either
    assert torch.equal(g_old.get_state(), g_new.get_state())


def test_a_choice_runs_each_branch_on_the_samples_that_picked_it() -> None:
    crops = _crops()
    crops_copy = crops.clone()
    pipeline = PhotometricChoice(choice=(AutoAugmentConfig(), MOCO_V2), p=(0.5, 0.5))
    out = augment_view(crops, pipeline, torch.Generator().manual_seed(3))
    assert torch.equal(crops, crops_copy)

    # replay the documented order: one uniform per sample, then each branch on its sub-batch
    g = torch.Generator().manual_seed(3)
    first = torch.rand(len(crops), generator=g, dtype=torch.float64) < 0.5
    assert 0 < int(first.sum()) < len(crops)
    expected = torch.empty(crops.shape)
    expected[first] = apply_autoaugment(crops[first], g).float() / 255
    expected[~first] = apply_photometric(crops[~first].float() / 255, MOCO_V2, g)
    assert torch.equal(out, normalize(expected))


def test_choice_weights_are_the_per_sample_probabilities() -> None:
    crops = _crops(batch=4000, height=2, width=2, seed=2)
    for p, share in (((0.2, 0.8), 0.2), (None, 0.5), ((3.0, 1.0), 0.75), ((0.0, 1.0), 0.0)):
        pipeline = PhotometricChoice(choice=(GRAY_ONLY, ()), p=p)
        out = run_pipeline(crops, pipeline, torch.Generator().manual_seed(0))
        gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
        assert abs(gray.float().mean().item() - share) < 0.025, p
        # the samples that stayed colour are untouched (the identity branch, as floats)
        assert torch.equal(out[~gray], crops[~gray].float() / 255)


def test_a_sequence_runs_its_steps_in_order() -> None:
    crops = _crops(seed=4)
    out = augment_view(crops, (AutoAugmentConfig(), SLOTCON_VIEW2), torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    expected = normalize(apply_photometric(apply_autoaugment(crops, g).float() / 255, SLOTCON_VIEW2, g))
    assert torch.equal(out, expected)


def test_uint8_steps_stay_uint8_and_never_follow_a_colour_step() -> None:
    crops = _crops(batch=6)
    g = torch.Generator().manual_seed(0)
    assert run_pipeline(crops, AutoAugmentConfig(), g).dtype == torch.uint8
    assert run_pipeline(crops, PhotometricChoice(choice=(AutoAugmentConfig(), ())), g).dtype == torch.uint8
    mixed = PhotometricChoice(choice=(AutoAugmentConfig(), MOCO_V2))
    assert run_pipeline(crops, mixed, g).dtype == torch.float32
    same = run_pipeline(crops, (), g)
    assert torch.equal(same, crops) and same is not crops

    assert [key for key, _ in check_pipeline((AutoAugmentConfig(), MOCO_V2))] == ["photometric.1"]
    assert [key for key, _ in check_pipeline(mixed, "v")] == ["v.choice.1"]
    for bad in ((MOCO_V2, AutoAugmentConfig()), (mixed, AutoAugmentConfig())):
        with pytest.raises(ValueError, match="^photometric.1: AutoAugment works on uint8"):
            check_pipeline(bad)
        with pytest.raises(ValueError, match="uint8"):
            run_pipeline(crops, bad, g)
    with pytest.raises(ValueError, match="uint8 crops"):
        augment_view(crops.float(), MOCO_V2, g)


def test_augment_view_uses_only_the_given_generator() -> None:
    crops = _crops(batch=8)
    pipeline = PhotometricChoice(choice=(AutoAugmentConfig(), MOCO_V2))
    state = torch.get_rng_state()
    a = augment_view(crops, pipeline, torch.Generator().manual_seed(1))
    b = augment_view(crops, pipeline, torch.Generator().manual_seed(1))
    c = augment_view(crops, pipeline, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert augment_view(crops[:0], pipeline, torch.Generator()).shape == (0, 3, 20, 28)


def test_choice_declaration_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PhotometricChoice(choice=())
    with pytest.raises(ValueError, match=r"one weight per pipeline \(2\)"):
        PhotometricChoice(choice=(MOCO_V2, ()), p=(1.0,))
    with pytest.raises(ValueError, match="weights >= 0"):
        PhotometricChoice(choice=(MOCO_V2, ()), p=(1.0, -0.5))
    assert PhotometricChoice(choice=(MOCO_V2, (), ()), p=(2, 1, 1)).weights() == (0.5, 0.25, 0.25)


# --------------------------------------------------------------------------------------------
# the recipe form


def _config(*photometric) -> dict:
    return {"method": {"name": "mocov2"}, "views": [{"photometric": p} for p in photometric]}


REVISITED = {"choice": [{"autoaugment": "imagenet"}, {**COLOUR_FIELDS, "grayscale_p": 0.2}], "p": [0.5, 0.5]}


def test_recipes_declare_choices_and_sequences() -> None:
    config = from_dict(_config(REVISITED, COLOUR_FIELDS, [{"autoaugment": "imagenet"}, {"blur_p": 1.0}]))
    choice, colour, sequence = (view.photometric for view in config.views)
    assert choice == PhotometricChoice(
        choice=(AutoAugmentConfig("imagenet"), PhotometricConfig(**COLOUR_FIELDS)), p=(0.5, 0.5)
    )
    assert colour == PhotometricConfig(**COLOUR_FIELDS)  # the former form, unchanged
    assert sequence == (AutoAugmentConfig(), PhotometricConfig(blur_p=1.0))
    assert from_dict(to_dict(config)) == config


def test_overrides_reach_inside_a_choice() -> None:
    data = _config(REVISITED, COLOUR_FIELDS)
    apply_override(data, "views.0.photometric.choice.1.blur_p=0.25")
    apply_override(data, "views.1.photometric.solarize_p=0.2")
    config = from_dict(data)
    assert config.views[0].photometric.choice[1].blur_p == 0.25
    assert config.views[1].photometric.solarize_p == 0.2


AA = {"autoaugment": "imagenet"}
MISTAKES = [
    (
        {"jitter_pp": 0.8},
        "unknown key 'views.0.photometric.jitter_pp' in views.0.photometric (did you mean 'jitter_p'?)",
    ),
    (
        {"autoaugment": "imagenett"},
        "views.0.photometric.autoaugment: invalid value 'imagenett' (did you mean 'imagenet'?)",
    ),
    ({"choice": [AA, {"hue_": 0.1}]}, "unknown key 'views.0.photometric.choice.1.hue_'"),
    ({"choice": [AA], "p": [0.5, 0.5]}, "views.0.photometric: p must have one weight per pipeline (1)"),
    # the second colour step of a view is checked too
    ({"choice": [{"hue": 0}, {"hue": 0.7}]}, "views.0.photometric.choice.1.hue must be a number in [0, 0.5]"),
    ([AA, {"grayscale_p": 2}], "views.0.photometric.1.grayscale_p must be a number in [0, 1]"),
    ([{"blur_p": 1.0}, AA], "views.0.photometric.1: AutoAugment works on uint8 images"),
]


@pytest.mark.parametrize(("photometric", "message"), MISTAKES)
def test_pipeline_mistakes_stop_with_one_line_naming_the_key(photometric, message) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(_config(photometric, COLOUR_FIELDS))
    assert message in str(info.value)
    assert "\n" not in str(info.value)

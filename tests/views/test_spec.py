"""CropSpec: defined torch-free, the same class from the sampler."""

from __future__ import annotations

from densessl.views import sampler, spec


def test_the_sampler_reexports_the_same_class() -> None:
    assert sampler.CropSpec is spec.CropSpec
    assert spec.CropSpec.__module__ == "densessl.views.spec"


def test_defaults_unchanged_by_the_move() -> None:
    crop = spec.CropSpec(size=96)
    assert (crop.scale, crop.interpolation, crop.flip_p, crop.reference, crop.tries) == (
        (0.2, 1.0),
        "bilinear",
        0.5,
        None,
        10,
    )

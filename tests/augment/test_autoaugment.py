"""Batched per-sample AutoAugment against torchvision's AutoAugment applied image by image."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2._auto_augment as tv_auto_augment
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from densessl.augment import autoaugment as AA

# Non-square, so that an axis or a width/height swap shows.
H, W = 24, 37


def _images(batch: int, seed: int = 0, height: int = H, width: int = W) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 3, height, width), generator=g, dtype=torch.uint8)
    # smooth content, so geometric ops move structure rather than noise
    ramp = torch.linspace(0, 255, width).round().to(torch.uint8)
    x[0] = ramp.expand(3, height, width)
    x[1] = 77  # constant: autocontrast and equalize edge cases
    if batch > 2:
        x[2] = x[2] // 64 * 64  # four levels only
    return x


def _reference() -> v2.AutoAugment:
    return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=InterpolationMode.NEAREST)


def _reference_op(image: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    # torchvision's own mapping from (op, magnitude) to its functional ops
    ref = _reference()
    return ref._apply_image_or_video_transform(
        image, op, magnitude, interpolation=ref.interpolation, fill=ref._fill
    )


def test_policy_and_magnitude_tables_match_torchvision() -> None:
    ref = _reference()
    assert [tuple(tuple(op) for op in sub) for sub in ref._policies] == list(AA.IMAGENET_POLICY)
    space = ref._AUGMENTATION_SPACE
    assert set(space) == set(AA.AUTOAUGMENT_OPS)
    for op, (bins_fn, signed) in space.items():
        for height, width in ((H, W), (160, 160), (96, 224)):
            theirs = bins_fn(10, height, width)
            ours = AA.magnitude_bins(op, height, width)
            if theirs is None:
                assert ours is None, op
            else:
                assert ours == tuple(float(v) for v in theirs), (op, height, width)
                assert (op in AA.SIGNED_OPS) == signed, op


@pytest.mark.parametrize("op", AA.AUTOAUGMENT_OPS)
def test_each_op_per_sample_equals_torchvision_image_by_image(op: str) -> None:
    x = _images(8, seed=AA.AUTOAUGMENT_OPS.index(op))
    bins = AA.magnitude_bins(op, H, W)
    if bins is None:
        mags = [0.0] * 8
    else:
        # both signs, a repeated magnitude (one group of several samples) and the extremes
        mags = [bins[9], -bins[9], bins[4], -bins[4], bins[9], bins[0], bins[7], -bins[2]]
        if op not in AA.SIGNED_OPS:
            mags = [abs(m) for m in mags]
    ops = torch.full((8,), AA.AUTOAUGMENT_OPS.index(op))
    ops[5] = -1  # this sample is left alone
    x_copy = x.clone()
    out = AA.apply_ops_per_sample(x, ops, torch.tensor(mags, dtype=torch.float64))
    assert torch.equal(x, x_copy)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for b in range(8):
        expected = x[b] if ops[b] < 0 else _reference_op(x[b], op, mags[b])
        assert torch.equal(out[b], expected), (op, b, mags[b])
    # the op does something on these images (else the comparison above proves little)
    changed = [b for b in range(8) if ops[b] >= 0 and not torch.equal(out[b], x[b])]
    assert changed, op


def test_geometry_directions_and_fill() -> None:
    """Independent of torchvision's dispatch: a positive translate moves content right / down,
    the uncovered border is filled with 0, and ShearX keeps the top row (shear about the origin)."""
    x = _images(2)[0:1].clone()
    x[0] = torch.arange(H * W).view(1, H, W).remainder(200).add(30).to(torch.uint8)
    right = AA.apply_autoaugment_op(x, "TranslateX", 3.7)  # whole pixels: 3
    assert torch.equal(right[..., 3:], x[..., :-3]) and not right[..., :3].any()
    down = AA.apply_autoaugment_op(x, "TranslateY", -2.0)
    assert torch.equal(down[..., :-2, :], x[..., 2:, :]) and not down[..., -2:, :].any()
    sheared = AA.apply_autoaugment_op(x, "ShearX", 0.3)
    assert torch.equal(sheared[..., 0, :], x[..., 0, :])
    assert not torch.equal(sheared[..., -1, :], x[..., -1, :])
    turned = AA.apply_autoaugment_op(x, "Rotate", 30.0)
    assert torch.equal(turned, TF.rotate(x, 30.0, interpolation=InterpolationMode.NEAREST))
    assert turned[..., 0, 0].eq(0).all()  # a corner leaves the frame and is filled with 0


class _Replay:
    """Stands in for ``torch`` inside torchvision's AutoAugment: its draws come from a list."""

    def __init__(self, draws: list[float]) -> None:
        self.draws = draws

    def randint(self, high: int, size: tuple[int, ...]) -> torch.Tensor:
        value = self.draws.pop(0)
        assert 0 <= value < high
        return torch.tensor(int(value))

    def rand(self, size: tuple[int, ...]) -> torch.Tensor:
        return torch.tensor(self.draws.pop(0), dtype=torch.float32)

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)


def _torchvision_draws(params: dict[str, torch.Tensor], b: int) -> list[float]:
    """Our draws for sample ``b`` in the order torchvision's forward consumes them."""
    ref = _reference()
    sub = int(params["policy"][b])
    draws: list[float] = [sub]
    for k, (op, prob, _) in enumerate(ref._policies[sub]):
        u = float(params["apply"][b, k])
        draws.append(u)
        runs = bool(torch.tensor(u, dtype=torch.float32) <= prob)
        bins_fn, signed = ref._AUGMENTATION_SPACE[op]
        if runs and signed and bins_fn(10, H, W) is not None:
            draws.append(float(params["sign"][b, k]))
    return draws


def _compare_with_torchvision(x: torch.Tensor, params: dict[str, torch.Tensor], monkeypatch) -> None:
    out = AA.apply_autoaugment(x, None, params=params)
    ref = _reference()
    for b in range(x.shape[0]):
        draws = _torchvision_draws(params, b)
        with monkeypatch.context() as m:
            m.setattr(tv_auto_augment, "torch", _Replay(draws))
            expected = ref(x[b])
        assert not draws, "torchvision consumed fewer draws than expected"
        assert torch.equal(out[b], expected), (b, params["policy"][b], params["apply"][b], params["sign"][b])


def test_autoaugment_equals_torchvision_per_image_with_the_same_draws(monkeypatch) -> None:
    n = 250
    x = _images(n, seed=3)
    params = AA.sample_autoaugment_params(n, torch.Generator().manual_seed(0))
    _compare_with_torchvision(x, params, monkeypatch)
    ops, mags = AA.autoaugment_actions(params, H, W)
    # the draws reached every sub-policy, both outcomes of the coins and both signs
    assert len(set(params["policy"].tolist())) == len(AA.IMAGENET_POLICY)
    assert (ops == -1).any() and (ops >= 0).float().mean() > 0.5
    assert (mags < 0).any() and (mags > 0).any()


def test_boundary_draws_follow_torchvision(monkeypatch) -> None:
    """A draw equal to the probability runs the op; a sign draw of exactly 0.5 negates."""
    table = AA.IMAGENET_POLICY
    subs = [0, 8, 10, 14, 15, 17, 18, 12]  # Posterize/Rotate, Rotate/Solarize, ..., Equalize 0.0
    params = {
        "policy": torch.tensor(subs),
        "apply": torch.tensor([[table[s][0][1], table[s][1][1]] for s in subs], dtype=torch.float32),
        "sign": torch.full((len(subs), 2), 0.5),
    }
    x = _images(len(subs), seed=4)
    _compare_with_torchvision(x, params, monkeypatch)
    ops, mags = AA.autoaugment_actions(params, H, W)
    assert (ops >= 0).all()
    rotate = ops == AA.AUTOAUGMENT_OPS.index("Rotate")
    assert rotate.any() and (mags[rotate] < 0).all()
    # just above the probability the op is skipped (the float32 neighbour)
    params["apply"] = torch.nextafter(params["apply"], torch.tensor(2.0))
    ops, _ = AA.autoaugment_actions(params, H, W)
    assert (ops == -1).all()


def test_draws_come_from_the_generator_only() -> None:
    x = _images(32, seed=5)
    state = torch.get_rng_state()
    a = AA.apply_autoaugment(x, torch.Generator().manual_seed(1))
    b = AA.apply_autoaugment(x, torch.Generator().manual_seed(1))
    c = AA.apply_autoaugment(x, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # different images of one batch get different sub-policies
    params = AA.sample_autoaugment_params(32, torch.Generator().manual_seed(1))
    assert len(set(params["policy"].tolist())) > 5


def test_probabilities_and_signs_of_the_draws() -> None:
    n = 20000
    params = AA.sample_autoaugment_params(n, torch.Generator().manual_seed(0))
    ops, mags = AA.autoaugment_actions(params, 160, 160)
    sub = params["policy"]
    counts = torch.bincount(sub, minlength=25).float() / n
    assert (counts - 1 / 25).abs().max() < 0.01
    # sub-policy 14 is (Color 0.6 bin 4, Contrast 1.0 bin 8): check both rates and signs
    rows = sub == 14
    assert abs((ops[rows, 0] >= 0).float().mean().item() - 0.6) < 0.05
    assert (ops[rows, 1] == AA.AUTOAUGMENT_OPS.index("Contrast")).all()
    contrast = mags[rows, 1]
    assert set(contrast.abs().tolist()) == {AA.magnitude_bins("Contrast", 160, 160)[8]}
    assert abs((contrast < 0).float().mean().item() - 0.5) < 0.05
    # unsigned ops never get a negative magnitude
    names = [AA.AUTOAUGMENT_OPS[o] for o in ops.flatten().tolist() if o >= 0]
    unsigned = torch.tensor([name not in AA.SIGNED_OPS for name in names])
    assert (mags.flatten()[ops.flatten() >= 0][unsigned] >= 0).all()


def test_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        AA.apply_autoaugment(torch.rand(2, 3, 4, 4), torch.Generator())

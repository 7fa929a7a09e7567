"""Procedural scene benchmark: textured dead-leaves scenes with exact class and instance masks.

Every image holds several occluding objects painted in random z-order over a textured
background. An object's class is its *texture family* (oriented stripes, checker, dots,
cross-hatch, rings, grain noise, ...) and, by default, also its *shape family* (disk, triangle,
star, L, T, ...). Colour, brightness, contrast, orientation, texture phase and scale are drawn per
object independently of the class, so neither mean colour nor simple edge statistics identify a
class; a per-pixel probe needs features that describe local texture structure.

Scenes are a pure function of ``(config.seed, split, index)``: the same index gives bit-identical
arrays in any process or data-loader worker on the same platform. Rendering is vectorised numpy
and works on each object's bounding box only, which keeps it in the 1k images/s range at 64 px.

Texture frequencies and sizes are defined on a 64 px canvas and scale with ``image_size``, so a
scene rendered at 128 px shows the same content as at 64 px, only sharper.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Disjoint scene-seed ranges per split; 2**40 images per split is far beyond any use.
_SPLIT_SPAN = 1 << 40
_SPLIT_BASE = {name: i * _SPLIT_SPAN for i, name in enumerate(SPLITS)}

# Class k (1-based) uses TEXTURES[k - 1] and, when shapes are tied to classes,
# SHAPES[(k - 1) % len(SHAPES)]. The first eight of each are the most distinct, since the
# default has eight classes.
TEXTURES: tuple[str, ...] = (
    "stripes",
    "checker",
    "dots",
    "crosshatch",
    "rings",
    "grain",
    "waves",
    "bricks",
    "zigzag",
    "plaid",
    "dashes",
    "blotches",
    "coarse_stripes",
    "spiral",
)
SHAPES: tuple[str, ...] = (
    "disk",
    "triangle",
    "square",
    "star",
    "ellipse",
    "blob",
    "ell",
    "tee",
    "hexagon",
    "cross",
    "pentagon",
    "crescent",
)

# Base frequency of each texture in cycles per pixel of a 64 px canvas (Nyquist is 0.5).
_BASE_FREQ = {
    "stripes": 0.16,
    "checker": 0.09,
    "dots": 0.15,
    "crosshatch": 0.13,
    "rings": 0.13,
    "grain": 0.33,
    "waves": 0.14,
    "bricks": 0.14,
    "zigzag": 0.15,
    "plaid": 0.2,
    "dashes": 0.17,
    "blotches": 0.16,
    "coarse_stripes": 0.07,
    "spiral": 0.1,
}

_Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic scene generator.

    Ranges are inclusive ``(low, high)`` pairs; lists (from YAML) are accepted and stored as tuples.

    Attributes:
        image_size: side of the square images in pixels.
        num_classes: number of object classes K (class ids 1..K; 0 is the background).
        objects_per_image: range of the number of objects per image.
        object_scale: range of an object's side as a fraction of the image side.
        seed: dataset seed; different seeds give different, equally distributed datasets.
        void_border: mark a 1 px band on the visible outline of every object as 255 (void) in
            the class and instance masks, as PASCAL VOC does.
        contrast: range of the RGB distance (0..1) between an object's two colours.
        background_contrast: the same for the background.
        colour_randomness: 1 draws object colours independently of the class; 0 gives every
            class a fixed colour pair (a colour shortcut, for ablations only).
        texture_jitter: relative per-object jitter of the texture frequency.
        texture_overlap: probability that an object wears the texture of another class (its
            shape still follows its own class), so shape becomes necessary.
        shape_tied: when True each class has its own shape family; when False shapes are drawn
            at random and the class is defined by texture alone.
        max_occlusion: placement retries try to keep every object at least
            ``1 - max_occlusion`` visible (best effort).
        clutter: range of the number of small background-labelled clutter shapes.
        clutter_scale: range of a clutter shape's side as a fraction of the image side.
        pixel_noise: standard deviation of Gaussian pixel noise on the 0..1 scale.
    """

    image_size: int = 64
    num_classes: int = 8
    objects_per_image: tuple[int, int] = (3, 8)
    object_scale: _Range = (0.12, 0.45)
    seed: int = 0
    void_border: bool = True
    contrast: _Range = (0.25, 0.9)
    background_contrast: _Range = (0.1, 0.5)
    colour_randomness: float = 1.0
    texture_jitter: float = 0.15
    texture_overlap: float = 0.0
    shape_tied: bool = True
    max_occlusion: float = 0.6
    clutter: tuple[int, int] = (0, 3)
    clutter_scale: _Range = (0.04, 0.1)
    pixel_noise: float = 0.02

    def __post_init__(self) -> None:
        for name in (
            "objects_per_image",
            "object_scale",
            "contrast",
            "background_contrast",
            "clutter",
            "clutter_scale",
        ):
            value = tuple(getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ValueError(
                    f"SynthConfig.{name} must be a (low, high) pair with low <= high, got {value}"
                )
            object.__setattr__(self, name, value)
        if self.seed < 0:
            raise ValueError(f"SynthConfig.seed must be non-negative, got {self.seed}")
        if self.image_size < 16:
            raise ValueError(f"SynthConfig.image_size must be at least 16, got {self.image_size}")
        if not 1 <= self.num_classes <= len(TEXTURES):
            raise ValueError(f"SynthConfig.num_classes must be in 1..{len(TEXTURES)}, got {self.num_classes}")
        if self.objects_per_image[0] < 0 or self.objects_per_image[1] > 254:
            raise ValueError("SynthConfig.objects_per_image must lie in 0..254 (instance ids are uint8)")
        if self.clutter[0] < 0:
            raise ValueError("SynthConfig.clutter must be non-negative")
        if not 0.0 < self.object_scale[0] <= self.object_scale[1] <= 1.0:
            raise ValueError("SynthConfig.object_scale must lie in (0, 1]")
        if not 0.0 < self.clutter_scale[0] <= self.clutter_scale[1] <= 1.0:
            raise ValueError("SynthConfig.clutter_scale must lie in (0, 1]")
        for name in ("contrast", "background_contrast"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high <= 1.0:
                raise ValueError(f"SynthConfig.{name} must lie in [0, 1]")
        for name in ("colour_randomness", "texture_overlap", "max_occlusion"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SynthConfig.{name} must lie in [0, 1]")
        if self.texture_jitter < 0 or self.pixel_noise < 0:
            raise ValueError("SynthConfig.texture_jitter and pixel_noise must be non-negative")

    def to_dict(self) -> dict:
        """Plain JSON/YAML-serialisable dict (ranges as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


PRESETS: dict[str, SynthConfig] = {
    # Few, large, little-occluded objects with strong texture contrast.
    "easy": SynthConfig(
        num_classes=6,
        objects_per_image=(2, 4),
        object_scale=(0.25, 0.5),
        contrast=(0.45, 1.0),
        texture_jitter=0.1,
        max_occlusion=0.4,
        clutter=(0, 1),
        pixel_noise=0.0,
        seed=0,
    ),
    # The design point of the benchmark (spec C2/C3).
    "medium": SynthConfig(seed=0),
    # More classes, smaller objects, lower contrast, shape not tied to class, shared textures.
    "hard": SynthConfig(
        num_classes=12,
        objects_per_image=(4, 10),
        object_scale=(0.1, 0.4),
        contrast=(0.15, 0.7),
        background_contrast=(0.15, 0.6),
        texture_jitter=0.3,
        texture_overlap=0.1,
        shape_tied=False,
        max_occlusion=0.7,
        clutter=(2, 6),
        pixel_noise=0.04,
        seed=0,
    ),
}


def resolve_config(config: SynthConfig | str | None) -> SynthConfig:
    """Return ``config`` itself, the named preset, or the default configuration for ``None``."""
    if config is None:
        return SynthConfig()
    if isinstance(config, SynthConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown synthetic preset {config!r}; valid presets: {', '.join(PRESETS)}")
        return PRESETS[config]
    raise TypeError(f"expected SynthConfig, preset name or None, got {type(config).__name__}")


def class_names(config: SynthConfig | str | None = None) -> list[str]:
    """Names of the K+1 classes; index 0 is ``"background"``."""
    config = resolve_config(config)
    names = ["background"]
    for k in range(config.num_classes):
        texture = TEXTURES[k]
        names.append(f"{texture}_{SHAPES[k % len(SHAPES)]}" if config.shape_tied else texture)
    return names


def scene_seed(split: str, index: int) -> int:
    """Scene seed of image ``index`` of ``split``; the splits occupy disjoint seed ranges."""
    if split not in _SPLIT_BASE:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if not 0 <= index < _SPLIT_SPAN:
        raise IndexError(f"scene index {index} out of range")
    return _SPLIT_BASE[split] + int(index)


# ----------------------------------------------------------------------------------------------
# textures: functions of object-centred coordinates (in 64 px canvas units) -> pattern in [0, 1]
# ----------------------------------------------------------------------------------------------

_TWO_PI = np.float32(2.0 * math.pi)


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return x * c + y * s, y * c - x * s


def _sharpen(s: np.ndarray, gain: float) -> np.ndarray:
    """Map a signal in [-1, 1] to [0, 1]; gain 1 keeps a sine, larger gains approach a square wave."""
    s *= np.float32(0.5 * gain)
    s += np.float32(0.5)
    return np.clip(s, 0.0, 1.0, out=s)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _triangle(x: np.ndarray) -> np.ndarray:
    """Triangle wave with period 1: 1 at integers, 0 at half-integers."""
    return np.abs(2.0 * _frac(x) - 1.0)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [0, 1] on an (h, w) patch; ``cell`` is the lattice spacing in pixels.

    Bilinear interpolation with smoothstep weights is separable, so it is written as two small
    matrix products instead of per-pixel gathers.
    """

    def weights(n: int) -> np.ndarray:
        t = np.arange(n, dtype=np.float32) / np.float32(cell) + np.float32(rng.random())
        i0 = t.astype(np.int64)
        t -= i0
        t = t * t * (3.0 - 2.0 * t)
        m = np.zeros((n, int(i0[-1]) + 2), dtype=np.float32)
        rows = np.arange(n)
        m[rows, i0] = 1.0 - t
        m[rows, i0 + 1] = t
        return m

    wy, wx = weights(h), weights(w)
    grid = rng.random((wy.shape[1], wx.shape[1]), dtype=np.float32)
    return wy @ grid @ wx.T


class _TexArgs:
    """Everything a texture function may use for one object.

    ``x`` (1, w) and ``y`` (h, 1) are object-centred coordinates in 64 px canvas units, ``scale``
    is image pixels per canvas unit, ``r`` holds per-object uniform random numbers.
    """

    __slots__ = ("x", "y", "h", "w", "scale", "freq", "r", "radius", "rng")

    def __init__(self, x, y, scale, freq, r, radius, rng) -> None:
        self.x, self.y, self.scale, self.freq, self.r, self.radius, self.rng = (
            x,
            y,
            scale,
            freq,
            r,
            radius,
            rng,
        )
        self.h, self.w = y.shape[0], x.shape[1]


def _gain(a: _TexArgs) -> float:
    """Per-object edge sharpness of a texture: 1 (sine-like) to 3 (nearly square)."""
    return 1.0 + 2.0 * float(a.r[4])


def _tex_stripes(a: _TexArgs) -> np.ndarray:
    u, _ = _rotate(a.x, a.y, a.r[0] * math.tau)
    return _sharpen(np.sin(u * np.float32(math.tau * a.freq) + np.float32(a.r[2] * math.tau)), _gain(a))


def _tex_checker(a: _TexArgs) -> np.ndarray:
    u, v = _rotate(a.x, a.y, a.r[0] * math.tau)
    k = np.float32(math.tau * a.freq)
    s = np.sin(u * k + np.float32(a.r[2] * math.tau)) * np.sin(v * k + np.float32(a.r[3] * math.tau))
    return _sharpen(s, 2.0 * _gain(a))


def _tex_dots(a: _TexArgs) -> np.ndarray:
    u, v = _rotate(a.x, a.y, a.r[0] * math.tau)
    du = _frac(u * np.float32(a.freq) + np.float32(a.r[2])) - np.float32(0.5)
    dv = _frac(v * np.float32(a.freq) + np.float32(a.r[3])) - np.float32(0.5)
    radius = 0.2 + 0.12 * a.r[5]
    # distance from the dot edge, in pixels, gives an anti-aliased edge
    s = (np.float32(radius) - np.sqrt(du * du + dv * dv)) * np.float32(2.0 / a.freq)
    return _sharpen(s, _gain(a))


def _lines(x: np.ndarray, phase: float, width: float, gain: float) -> np.ndarray:
    """Thin periodic lines (period 1 in ``x``); ``width`` is the cosine threshold in (0, 1)."""
    c = np.cos(x * _TWO_PI + np.float32(phase * math.tau))
    c -= np.float32(width)
    c *= np.float32(gain / (1.0 - width))
    return np.clip(c, 0.0, 1.0, out=c)


def _tex_crosshatch(a: _TexArgs) -> np.ndarray:
    angle = a.r[0] * math.tau
    u, _ = _rotate(a.x, a.y, angle)
    v, _ = _rotate(a.x, a.y, angle + math.radians(60.0 + 30.0 * a.r[5]))
    gain = 1.5 + a.r[4]
    f = np.float32(a.freq)
    return np.maximum(_lines(u * f, a.r[2], 0.55, gain), _lines(v * f, a.r[3], 0.55, gain))


def _tex_rings(a: _TexArgs) -> np.ndarray:
    ox = np.float32((a.r[5] - 0.5) * a.radius)
    oy = np.float32((a.r[6] - 0.5) * a.radius)
    rho = np.sqrt((a.x - ox) ** 2 + (a.y - oy) ** 2)
    return _sharpen(np.sin(rho * np.float32(math.tau * a.freq) + np.float32(a.r[2] * math.tau)), _gain(a))


def _noise_pattern(a: _TexArgs, gain: float) -> np.ndarray:
    # value-noise lattice spacing of one texture period, converted to image pixels
    n = _value_noise(a.rng, a.h, a.w, a.scale / a.freq)
    n -= np.float32(0.5)
    return _sharpen(n, 2.0 * gain * (0.6 + a.r[4]))


def _tex_grain(a: _TexArgs) -> np.ndarray:
    return _noise_pattern(a, 2.5)


def _tex_waves(a: _TexArgs) -> np.ndarray:
    u, v = _rotate(a.x, a.y, a.r[0] * math.tau)
    amp = np.float32(1.5 + 2.0 * a.r[5])
    bend = np.sin(v * np.float32(math.tau * 0.06) + np.float32(a.r[3] * math.tau)) * amp
    return _sharpen(
        np.sin((u + bend) * np.float32(math.tau * a.freq) + np.float32(a.r[2] * math.tau)), _gain(a)
    )


def _tex_bricks(a: _TexArgs) -> np.ndarray:
    u, v = _rotate(a.x, a.y, a.r[0] * math.tau)
    f = np.float32(a.freq)
    row_pos = v * f + np.float32(a.r[2])
    row = np.floor(row_pos)
    col_pos = u * (f * np.float32(0.5)) + np.float32(0.5) * row + np.float32(a.r[3])
    # distance (in periods) to the nearest mortar line, horizontal and vertical
    dh = np.abs(row_pos - row - np.float32(0.5))
    dv = np.abs(_frac(col_pos) - np.float32(0.5)) * np.float32(2.0)
    d = np.maximum(dh, np.float32(0.5) * dv)
    s = (np.float32(0.38) - d) * np.float32(4.0 / a.freq * 0.25)
    return _sharpen(s, _gain(a))


def _tex_zigzag(a: _TexArgs) -> np.ndarray:
    u, v = _rotate(a.x, a.y, a.r[0] * math.tau)
    amp = np.float32(2.0 + 2.0 * a.r[5])
    shift = _triangle(v * np.float32(0.09) + np.float32(a.r[3])) * amp
    return _sharpen(
        np.sin((u + shift) * np.float32(math.tau * a.freq) + np.float32(a.r[2] * math.tau)), _gain(a)
    )


def _tex_plaid(a: _TexArgs) -> np.ndarray:
    u, v = _rotate(a.x, a.y, a.r[0] * math.tau)
    s = np.sin(u * np.float32(math.tau * a.freq) + np.float32(a.r[2] * math.tau))
    s += np.sin(v * np.float32(math.tau * a.freq * 0.35) + np.float32(a.r[3] * math.tau))
    return _sharpen(s, 0.5 * _gain(a))


def _tex_dashes(a: _TexArgs) -> np.ndarray:
    u, v = _rotate(a.x, a.y, a.r[0] * math.tau)
    lines = _lines(u * np.float32(a.freq), a.r[2], 0.3, 1.5 + a.r[4])
    gate = _sharpen(np.sin(v * np.float32(math.tau * a.freq * 0.45) + np.float32(a.r[3] * math.tau)), 4.0)
    return lines * gate


def _tex_blotches(a: _TexArgs) -> np.ndarray:
    return _noise_pattern(a, 6.0)


def _tex_coarse_stripes(a: _TexArgs) -> np.ndarray:
    return _tex_stripes(a)


def _tex_spiral(a: _TexArgs) -> np.ndarray:
    arms = np.float32(2 + int(a.r[5] * 2.0))
    rho = np.sqrt(a.x * a.x + a.y * a.y)
    theta = np.arctan2(a.y, a.x)
    direction = np.float32(1.0 if a.r[6] < 0.5 else -1.0)
    s = np.sin(theta * arms * direction + rho * np.float32(math.tau * a.freq) + np.float32(a.r[2] * math.tau))
    return _sharpen(s, _gain(a))


_TEXTURE_FN: dict[str, Callable[[_TexArgs], np.ndarray]] = {
    "stripes": _tex_stripes,
    "checker": _tex_checker,
    "dots": _tex_dots,
    "crosshatch": _tex_crosshatch,
    "rings": _tex_rings,
    "grain": _tex_grain,
    "waves": _tex_waves,
    "bricks": _tex_bricks,
    "zigzag": _tex_zigzag,
    "plaid": _tex_plaid,
    "dashes": _tex_dashes,
    "blotches": _tex_blotches,
    "coarse_stripes": _tex_coarse_stripes,
    "spiral": _tex_spiral,
}


# ----------------------------------------------------------------------------------------------
# shapes: approximate signed distance (pixels, negative inside) from object-centred pixel coords
# ----------------------------------------------------------------------------------------------

# Largest extent of any shape in units of the object radius; sizes the bounding box.
_MAX_EXTENT = 1.35


def _polar(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.sqrt(u * u + v * v), np.arctan2(v, u)


def _polygon(u: np.ndarray, v: np.ndarray, circumradius: float, n: int) -> np.ndarray:
    rho, theta = _polar(u, v)
    sector = np.float32(math.tau / n)
    phi = np.mod(theta, sector) - sector * np.float32(0.5)
    return rho * np.cos(phi) - np.float32(circumradius * math.cos(math.pi / n))


def _boxes(u: np.ndarray, v: np.ndarray, radius: float, boxes: tuple) -> np.ndarray:
    """Union of axis-aligned boxes ``(cx, cy, half_x, half_y)`` given in units of ``radius``."""
    d = None
    for cx, cy, hx, hy in boxes:
        db = np.maximum(
            np.abs(u - np.float32(cx * radius)) - np.float32(hx * radius),
            np.abs(v - np.float32(cy * radius)) - np.float32(hy * radius),
        )
        d = db if d is None else np.minimum(d, db)
    return d


def _shape_sdf(name: str, x: np.ndarray, y: np.ndarray, radius: float, r: np.ndarray) -> np.ndarray:
    """Signed distance of shape ``name``; ``r`` holds uniform random numbers (r[0] = rotation)."""
    if name == "disk":
        return np.sqrt(x * x + y * y) - np.float32(radius)
    u, v = _rotate(x, y, r[0] * math.tau)
    if name == "ellipse":
        b = radius * (0.45 + 0.2 * r[1])
        q = np.sqrt((u * np.float32(1.0 / radius)) ** 2 + (v * np.float32(1.0 / b)) ** 2)
        return (q - np.float32(1.0)) * np.float32(b)
    if name == "triangle":
        return _polygon(u, v, 1.3 * radius, 3)
    if name == "square":
        return _polygon(u, v, 1.3 * radius, 4)
    if name == "pentagon":
        return _polygon(u, v, 1.15 * radius, 5)
    if name == "hexagon":
        return _polygon(u, v, 1.1 * radius, 6)
    if name == "star":
        points = 5 + int(r[1] * 2.0)
        inner = 0.42 + 0.15 * r[2]
        rho, theta = _polar(u, v)
        tips = _triangle(theta * np.float32(points / math.tau))
        outline = (np.float32(inner) + np.float32(1.0 - inner) * tips) * np.float32(1.25 * radius)
        return (rho - outline) * np.float32(0.7)
    if name == "blob":
        rho, theta = _polar(u, v)
        outline = np.float32(0.88) + np.float32(0.14) * np.cos(2.0 * theta + np.float32(r[1] * math.tau))
        outline += np.float32(0.1) * np.cos(3.0 * theta + np.float32(r[2] * math.tau))
        outline += np.float32(0.05) * np.cos(5.0 * theta + np.float32(r[3] * math.tau))
        return rho - outline * np.float32(radius)
    if name == "ell":
        return _boxes(u, v, radius, ((-0.5, 0.0, 0.45, 1.05), (0.05, 0.62, 1.0, 0.43)))
    if name == "tee":
        return _boxes(u, v, radius, ((0.0, -0.62, 1.05, 0.43), (0.0, 0.1, 0.35, 0.95)))
    if name == "cross":
        return _boxes(u, v, radius, ((0.0, 0.0, 1.1, 0.36), (0.0, 0.0, 0.36, 1.1)))
    if name == "crescent":
        outer = np.sqrt(u * u + v * v) - np.float32(1.1 * radius)
        shift = np.float32((0.45 + 0.2 * r[1]) * radius)
        inner = np.float32(0.85 * radius) - np.sqrt((u - shift) ** 2 + v * v)
        return np.maximum(outer, inner)
    raise ValueError(f"unknown shape {name!r}")


# ----------------------------------------------------------------------------------------------
# colours
# ----------------------------------------------------------------------------------------------


def _colour_pair(r: np.ndarray, contrast: _Range) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours (0..1) at a random distance within ``contrast`` along a random direction.

    The mean is shifted, not clipped, into the cube so that the drawn contrast is kept exactly.
    """
    direction = r[3:6] * 2.0 - 1.0
    norm = float(np.linalg.norm(direction))
    direction = direction / norm if norm > 1e-6 else np.array([1.0, 0.0, 0.0])
    amount = contrast[0] + (contrast[1] - contrast[0]) * r[6]
    half = 0.5 * amount * direction
    mean = np.clip(r[0:3], np.abs(half), 1.0 - np.abs(half))
    return (mean - half).astype(np.float32), (mean + half).astype(np.float32)


def _class_colours(config: SynthConfig, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed colour pair of class ``k``; only used when ``colour_randomness < 1``."""
    return _colour_pair(np.random.default_rng([0xC01, k]).random(7), config.contrast)


# ----------------------------------------------------------------------------------------------
# scene rendering
# ----------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """Class-0 "stuff": low-frequency cloudy texture mixing two random colours."""
    size = config.image_size
    scale = size / 64.0
    r = rng.random(8)
    clouds = _value_noise(rng, size, size, (14.0 + 6.0 * r[7]) * scale)
    clouds *= np.float32(0.7)
    clouds += np.float32(0.3) * _value_noise(rng, size, size, 6.0 * scale)
    clouds -= np.float32(0.5)
    pattern = _sharpen(clouds, 3.0)
    c1, c2 = _colour_pair(r, config.background_contrast)
    return c1 + (c2 - c1) * pattern[..., None]


class _Painter:
    """Paints dead-leaves layers onto a float canvas and keeps the instance map in sync."""

    def __init__(self, config: SynthConfig, rng: np.random.Generator, canvas: np.ndarray, n_objects: int):
        self.config = config
        self.rng = rng
        self.size = config.image_size
        self.scale = self.size / 64.0
        self.canvas = canvas
        self.instance = np.zeros((self.size, self.size), dtype=np.uint8)
        self.area = np.zeros(n_objects + 1, dtype=np.int64)
        self.visible = np.zeros(n_objects + 1, dtype=np.int64)
        self.painted = 0  # objects painted so far, i.e. the highest instance id in use

    def _place(self, shape: str, radius: float, r_shape: np.ndarray):
        """Pick a centre; retry while the layer would hide too much of an earlier object."""
        size = self.size
        half = int(math.ceil(_MAX_EXTENT * radius)) + 1
        min_visible = 1.0 - self.config.max_occlusion
        for attempt in range(4):
            # the centre keeps at least ~70% of the radius inside the frame
            cx, cy = 0.3 * radius + (size - 0.6 * radius) * self.rng.random(2)
            x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, size)
            y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, size)
            x = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
            y = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
            sdf = _shape_sdf(shape, x, y, radius, r_shape)
            mask = sdf < 0
            if self.painted == 0 or attempt == 3:
                break
            lost = np.bincount(self.instance[y0:y1, x0:x1][mask], minlength=256)[1 : self.painted + 1]
            if np.all(
                self.visible[1 : self.painted + 1] - lost >= min_visible * self.area[1 : self.painted + 1]
            ):
                break
        return (y0, y1, x0, x1), x, y, sdf, mask

    def paint(self, shape: str, radius: float, r_shape: np.ndarray, pattern_fn, colours, label: int) -> None:
        (y0, y1, x0, x1), x, y, sdf, mask = self._place(shape, radius, r_shape)
        region = self.canvas[y0:y1, x0:x1]
        c1, c2 = colours
        if pattern_fn is None:
            colour = c1
        else:
            pattern = pattern_fn(x * np.float32(1.0 / self.scale), y * np.float32(1.0 / self.scale))
            colour = c1 + (c2 - c1) * pattern[..., None]
        # anti-aliased edge: pixels half-way across the outline get half of the new colour
        alpha = np.clip(np.float32(0.5) - sdf, 0.0, 1.0)[..., None]
        region += (colour - region) * alpha
        inst_region = self.instance[y0:y1, x0:x1]
        covered = np.bincount(inst_region[mask], minlength=256)
        self.visible[: self.painted + 1] -= covered[: self.painted + 1]
        np.copyto(inst_region, np.uint8(label), where=mask)
        if label:
            n = int(np.count_nonzero(mask))
            self.area[label] = n
            self.visible[label] = n


def _void_band(instance: np.ndarray) -> np.ndarray:
    """Outline pixels: pixels with a 4-neighbour of a lower instance id (painted earlier).

    This marks exactly one pixel on the visible outline of each object (on the side of the
    object in front), like the thin void border of PASCAL VOC masks.
    """
    band = np.zeros(instance.shape, dtype=bool)
    band[1:, :] |= instance[:-1, :] < instance[1:, :]
    band[:-1, :] |= instance[1:, :] < instance[:-1, :]
    band[:, 1:] |= instance[:, :-1] < instance[:, 1:]
    band[:, :-1] |= instance[:, 1:] < instance[:, :-1]
    return band


def object_look(
    config: SynthConfig, cls: int, r: np.ndarray
) -> tuple[str, str, float, float, tuple[np.ndarray, np.ndarray]]:
    """Shape, texture, radius (px), texture frequency and colour pair of an object of class
    ``cls``, drawn from the 24 uniforms ``r`` of its layer (``r[12:24]`` are left to the caller:
    texture phases and the shape's pose)."""
    k = config.num_classes
    shape = SHAPES[(cls - 1) % len(SHAPES)] if config.shape_tied else SHAPES[int(r[0] * len(SHAPES))]
    texture = TEXTURES[cls - 1]
    if k > 1 and r[1] < config.texture_overlap:
        other = 1 + int(r[2] * (k - 1))  # a class id in 1..K other than cls
        if other >= cls:
            other += 1
        texture = TEXTURES[other - 1]
    side = config.object_scale[0] + (config.object_scale[1] - config.object_scale[0]) * r[3]
    radius = 0.5 * side * config.image_size
    freq = _BASE_FREQ[texture] * (1.0 + config.texture_jitter * (2.0 * r[4] - 1.0))
    colours = _colour_pair(r[5:12], config.contrast)
    if config.colour_randomness < 1.0:
        fixed = _class_colours(config, cls)
        w = np.float32(config.colour_randomness)
        colours = tuple(w * c + (1 - w) * f for c, f in zip(colours, fixed, strict=True))
    return shape, texture, radius, freq, colours


def render_scene(config: SynthConfig | str | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one scene, a pure function of ``(config, seed)``.

    Returns ``(image, class_mask, instance_mask)``: ``image`` is uint8 (H, W, 3); ``class_mask``
    is uint8 (H, W) with 0 = background, 1..K = object classes and 255 = void outline (when
    ``config.void_border``); ``instance_mask`` is uint8 (H, W) with 0 = background, 1..N = objects
    in painting order (back to front) and the same 255 outline. Clutter shapes are background.
    """
    config = resolve_config(config)
    if seed < 0:
        raise ValueError(f"scene seed must be non-negative, got {seed}")
    rng = np.random.default_rng([config.seed, int(seed)])
    size, k = config.image_size, config.num_classes

    n_objects = int(rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1))
    n_clutter = int(rng.integers(config.clutter[0], config.clutter[1] + 1))
    layers = np.concatenate([np.ones(n_objects, dtype=np.int8), np.zeros(n_clutter, dtype=np.int8)])
    rng.shuffle(layers)
    classes = rng.integers(1, k + 1, size=n_objects)

    canvas = _background(rng, config)
    painter = _Painter(config, rng, canvas, n_objects)
    scale = painter.scale
    lut = np.zeros(256, dtype=np.uint8)
    lut[255] = 255

    for is_object in layers:
        r = rng.random(24)
        if is_object:
            label = painter.painted + 1
            cls = int(classes[label - 1])
            lut[label] = cls
            shape, texture, radius, freq, colours = object_look(config, cls, r)
            tex_fn = _TEXTURE_FN[texture]
            tex_r = r[12:20]
            radius_units = radius / scale

            def pattern_fn(x, y, tex_fn=tex_fn, freq=freq, tex_r=tex_r, radius_units=radius_units):
                return tex_fn(_TexArgs(x, y, scale, freq, tex_r, radius_units, rng))

            painter.paint(shape, radius, r[20:24], pattern_fn, colours, label)
            painter.painted = label
        else:
            side = config.clutter_scale[0] + (config.clutter_scale[1] - config.clutter_scale[0]) * r[3]
            shape = SHAPES[int(r[0] * len(SHAPES))]
            colours = _colour_pair(r[5:12], (0.0, 0.0))
            painter.paint(shape, 0.5 * side * size, r[20:24], None, colours, 0)

    image = painter.canvas
    if config.pixel_noise > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(config.pixel_noise)
    image = np.clip(image * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)

    instance = painter.instance
    if config.void_border:
        instance[_void_band(instance)] = 255
    return image, lut[instance], instance


# ----------------------------------------------------------------------------------------------
# dataset views and the on-disk VOC layout
# ----------------------------------------------------------------------------------------------


class SyntheticScenes:
    """Indexable dataset of synthetic scenes returning ``(image, class_mask)`` numpy arrays.

    Image ``i`` of ``split`` is ``render_scene(config, scene_seed(split, i))``; "train", "val"
    and "test" use disjoint seed ranges. The object holds no state besides its arguments, so it
    pickles cheaply into data-loader workers.
    """

    def __init__(
        self, config: SynthConfig | str | None = None, split: str = "train", length: int = 1000
    ) -> None:
        self.config = resolve_config(config)
        if split not in _SPLIT_BASE:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if length < 0:
            raise ValueError(f"length must be non-negative, got {length}")
        self.split = split
        self.length = int(length)

    @property
    def num_classes(self) -> int:
        """Number of classes including the background (K + 1)."""
        return self.config.num_classes + 1

    @property
    def class_names(self) -> list[str]:
        return class_names(self.config)

    def __len__(self) -> int:
        return self.length

    def _check(self, index: int) -> int:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic {self.split} images")
        return index

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image, class_mask, instance_mask)`` of scene ``index``."""
        return render_scene(self.config, scene_seed(self.split, self._check(index)))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, class_mask, _ = self.render(index)
        return image, class_mask


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map, shape (n, 3) uint8.

    Entry i spreads the bits of i over the channels: bit 3j (resp. 3j+1, 3j+2) of i sets bit
    7-j of red (resp. green, blue).
    """
    index = np.arange(n)
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for j in range(8):
        for channel in range(3):
            bit = (index >> (3 * j + channel)) & 1
            cmap[:, channel] |= (bit << (7 - j)).astype(np.uint8)
    return cmap


def save_palette_png(mask: np.ndarray, path: str | Path) -> None:
    """Write a uint8 (H, W) label map as a mode 'P' PNG with the VOC colour map."""
    from PIL import Image

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    img.putpalette(voc_colormap().tobytes())
    img.save(path)


def write_voc(out_dir: str | Path, config: SynthConfig | str | None, n_train: int, n_val: int) -> Path:
    """Write scenes in the PASCAL VOC 2012 segmentation layout and return the ``VOC2012`` folder.

    Layout under ``out_dir/VOCdevkit/VOC2012``: ``JPEGImages/<stem>.jpg`` (quality 95, no chroma
    subsampling: 4:2:0 would smear the 2-3 px colour textures, mean error ~8 instead of ~3 levels),
    ``SegmentationClass/<stem>.png`` and ``SegmentationObject/<stem>.png`` (mode 'P', VOC colour
    map, 255 = void), ``ImageSets/Segmentation/{train,val,trainval}.txt``, plus ``labels.txt``
    (one class name per line, line i = class i) and ``synthetic.json`` (config and names).
    Train image i is scene i of split "train" and val image i is scene i of split "val", so the
    masks equal those of :class:`SyntheticScenes`; the JPEG images are lossy copies.
    """
    from PIL import Image

    config = resolve_config(config)
    root = Path(out_dir) / "VOCdevkit" / "VOC2012"
    folders = {name: root / name for name in ("JPEGImages", "SegmentationClass", "SegmentationObject")}
    sets = root / "ImageSets" / "Segmentation"
    for folder in (*folders.values(), sets):
        folder.mkdir(parents=True, exist_ok=True)

    stems: dict[str, list[str]] = {}
    for split, count in (("train", n_train), ("val", n_val)):
        stems[split] = []
        for i in range(count):
            stem = f"{split}_{i:06d}"
            image, class_mask, instance_mask = render_scene(config, scene_seed(split, i))
            Image.fromarray(image).save(folders["JPEGImages"] / f"{stem}.jpg", quality=95, subsampling=0)
            save_palette_png(class_mask, folders["SegmentationClass"] / f"{stem}.png")
            save_palette_png(instance_mask, folders["SegmentationObject"] / f"{stem}.png")
            stems[split].append(stem)

    for name, lines in (
        ("train", stems["train"]),
        ("val", stems["val"]),
        ("trainval", stems["train"] + stems["val"]),
    ):
        (sets / f"{name}.txt").write_text("".join(f"{s}\n" for s in lines))
    names = class_names(config)
    (root / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    meta = {
        "generator": "densessl.data.synthetic",
        "class_names": names,
        "config": config.to_dict(),
        "splits": {"train": n_train, "val": n_val},
    }
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


def benchmark(config: SynthConfig | str | None = None, n: int = 2000) -> float:
    """Render ``n`` training scenes on the calling thread and return images per second."""
    import time

    config = resolve_config(config)
    render_scene(config, 0)  # warm-up outside the timed loop
    start = time.perf_counter()
    for i in range(n):
        render_scene(config, i)
    return n / (time.perf_counter() - start)

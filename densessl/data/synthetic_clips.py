"""Short video clips of the synthetic scenes, written in the DAVIS-2017 layout (spec C5.5).

A clip shows a few textured objects of the synthetic benchmark (same classes, shapes, textures
and colour rules as :mod:`densessl.data.synthetic`) moving over its cloudy background:

- every object keeps its shape, texture and colours through the clip: it is rendered once as a
  sprite in its own coordinates, and each frame samples that sprite (bilinearly) under the
  object's pose, so noise textures do not flicker;
- objects translate at 0.5-2 px per frame (at 64 px; speeds scale with the image size), bounce
  off the image borders with their centre kept ~0.3 radius inside, grow or shrink smoothly by at
  most ~15% over the clip and turn by at most ~1.7 degrees per frame;
- half of the clips keep the background still, the others pan it slowly (0.1-0.5 px per frame);
- objects overlap in a fixed z-order: instance id ``k`` (1..n) is the k-th object painted, so
  later ids occlude earlier ones; the first frame is placed so that every object is visible
  there (best effort, as in the still scenes);
- annotations carry the instance ids only (0 background, no void band, as DAVIS does).

Clip ``index`` of ``split`` is a pure function of ``(config, split, index, frames)``; the frame
size is ``config.image_size``. The DAVIS resolution folder is still called ``480p`` so that the
standard reader options apply unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .synthetic import (
    _MAX_EXTENT,
    _TEXTURE_FN,
    SHAPES,
    SynthConfig,
    _background,
    _colour_pair,
    _shape_sdf,
    _TexArgs,
    object_look,
    resolve_config,
    save_palette_png,
    scene_seed,
)

__all__ = ["clip_name", "render_clip", "write_synthetic_davis"]

# Separates the clip random streams from those of the still scenes.
_CLIP_STREAM = 0xC11B
# Motion ranges, in pixels per frame of a 64 px canvas (scaled with the image size).
_OBJECT_SPEED = (0.5, 2.0)
_PAN_SPEED = (0.1, 0.5)
_MAX_GROWTH = 0.15  # |log scale| reached at the last frame
_MAX_SPIN = 0.03  # radians per frame
_PLACEMENT_TRIES = 8


def clip_name(index: int) -> str:
    """DAVIS sequence name of clip ``index``."""
    return f"synth{index:04d}"


@dataclasses.dataclass
class _Sprite:
    colour: np.ndarray  # (S, S, 3) float32 in [0, 1]
    sdf: np.ndarray  # (S, S) float32, pixels at scale 1, negative inside
    half: int  # sprite pixel (half, half) is the object centre
    radius: float
    start: np.ndarray  # (cy, cx) at frame 0
    velocity: np.ndarray  # (vy, vx) pixels per frame
    growth: float  # log scale at the last frame
    spin: float  # radians per frame


def _bilinear(array: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample ``array`` (H, W[, C]) at float index coordinates, clamped to its edges."""
    h, w = array.shape[:2]
    y = np.clip(y, 0.0, h - 1.0)
    x = np.clip(x, 0.0, w - 1.0)
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    if array.ndim == 3:
        fy, fx = fy[..., None], fx[..., None]
    top = array[y0, x0] * (1 - fx) + array[y0, x1] * fx
    bottom = array[y1, x0] * (1 - fx) + array[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _reflect(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold positions into [low, high] as a point bouncing between the two walls."""
    span = high - low
    if span <= 0:
        return np.full_like(p, 0.5 * (low + high))
    q = np.mod(p - low, 2.0 * span)
    return low + np.where(q <= span, q, 2.0 * span - q)


def _sprite(config: SynthConfig, rng: np.random.Generator, cls: int, scale: float) -> _Sprite:
    """Texture and shape of one object of class ``cls``, in its own coordinates."""
    r = rng.random(24)
    shape, texture, radius, freq, (c1, c2) = object_look(config, cls, r)
    half = int(math.ceil(_MAX_EXTENT * radius)) + 2
    coords = np.arange(-half, half + 1, dtype=np.float32)
    x, y = coords[None, :], coords[:, None]
    inv = np.float32(1.0 / scale)
    pattern = _TEXTURE_FN[texture](_TexArgs(x * inv, y * inv, scale, freq, r[12:20], radius / scale, rng))
    colour = (c1 + (c2 - c1) * pattern[..., None]).astype(np.float32)
    sdf = np.broadcast_to(_shape_sdf(shape, x, y, radius, r[20:24]), colour.shape[:2]).astype(np.float32)
    m = rng.random(5)
    speed = (_OBJECT_SPEED[0] + (_OBJECT_SPEED[1] - _OBJECT_SPEED[0]) * m[0]) * scale
    heading = m[1] * math.tau
    return _Sprite(
        colour=colour,
        sdf=sdf,
        half=half,
        radius=radius,
        start=np.zeros(2),
        velocity=np.array([speed * math.sin(heading), speed * math.cos(heading)]),
        growth=_MAX_GROWTH * (2.0 * m[2] - 1.0),
        spin=_MAX_SPIN * (2.0 * m[3] - 1.0),
    )


def _pose(sprite: _Sprite, t: int, frames: int, size: int) -> tuple[float, float, float, float]:
    """Centre (cy, cx), scale and angle of ``sprite`` at frame ``t``."""
    margin = 0.3 * sprite.radius
    centre = _reflect(sprite.start + sprite.velocity * t, margin, size - margin)
    s = math.exp(sprite.growth * t / max(frames - 1, 1))
    return float(centre[0]), float(centre[1]), s, sprite.spin * t


def _footprint(sprite: _Sprite, t: int, frames: int, size: int, colour: bool):
    """Where the sprite lands in frame ``t``: its box, signed distance and (optionally) colours."""
    cy, cx, s, angle = _pose(sprite, t, frames, size)
    extent = int(math.ceil(_MAX_EXTENT * sprite.radius * s)) + 1
    y0, y1 = max(int(cy) - extent, 0), min(int(cy) + extent + 1, size)
    x0, x1 = max(int(cx) - extent, 0), min(int(cx) + extent + 1, size)
    py = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
    px = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
    c, sn = math.cos(angle), math.sin(angle)
    # object coordinates of each pixel: undo the rotation, then the scale
    lx = (px * c + py * sn) / s + sprite.half
    ly = (py * c - px * sn) / s + sprite.half
    last = 2 * sprite.half
    outside = (lx < 0) | (lx > last) | (ly < 0) | (ly > last)
    sdf = _bilinear(sprite.sdf, ly, lx) * np.float32(s)
    sdf[outside] = np.float32(1e3)
    rgb = _bilinear(sprite.colour, ly, lx) if colour else None
    return (y0, y1, x0, x1), sdf, rgb


def _paint_clutter(canvas: np.ndarray, config: SynthConfig, rng: np.random.Generator, size: int) -> None:
    """Small flat background-labelled shapes painted into the background itself."""
    n = int(rng.integers(config.clutter[0], config.clutter[1] + 1))
    h, w = canvas.shape[:2]
    for _ in range(n):
        r = rng.random(24)
        side = config.clutter_scale[0] + (config.clutter_scale[1] - config.clutter_scale[0]) * r[3]
        radius = 0.5 * side * size
        shape = SHAPES[int(r[0] * len(SHAPES))]
        colour, _ = _colour_pair(r[5:12], (0.0, 0.0))
        cy, cx = r[12] * h, r[13] * w
        half = int(math.ceil(_MAX_EXTENT * radius)) + 1
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, h)
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, w)
        y = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
        x = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
        alpha = np.clip(np.float32(0.5) - _shape_sdf(shape, x, y, radius, r[20:24]), 0.0, 1.0)[..., None]
        region = canvas[y0:y1, x0:x1]
        region += (colour - region) * alpha


def _visible_enough(sprites: list[_Sprite], frames: int, size: int, min_visible: float) -> bool:
    instance = np.zeros((size, size), dtype=np.uint8)
    area = []
    for k, sprite in enumerate(sprites, start=1):
        (y0, y1, x0, x1), sdf, _ = _footprint(sprite, 0, frames, size, colour=False)
        mask = sdf < 0
        area.append(int(np.count_nonzero(mask)))
        np.copyto(instance[y0:y1, x0:x1], np.uint8(k), where=mask)
    visible = np.bincount(instance.ravel(), minlength=len(sprites) + 1)[1:]
    return all(a > 0 and v >= min_visible * a for v, a in zip(visible, area, strict=True))


def render_clip(
    config: SynthConfig | str | None,
    index: int,
    frames: int = 8,
    *,
    split: str = "val",
    objects: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render clip ``index`` of ``split``: frames (T, H, W, 3) uint8 and instance ids (T, H, W)
    uint8 (0 background, 1..n objects in z-order).

    ``objects`` is the range of the number of objects; by default the config's range clipped to
    at most 4 (DAVIS-2017 sequences hold 1-5 objects).
    """
    config = resolve_config(config)
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {frames}")
    if objects is None:
        low, high = config.objects_per_image
        objects = (max(1, min(low, 4)), max(1, min(high, 4)))
    if not 1 <= objects[0] <= objects[1] <= 254:
        raise ValueError(f"objects must be a (low, high) range within 1..254, got {objects}")
    rng = np.random.default_rng([config.seed, _CLIP_STREAM, scene_seed(split, index)])
    size, scale = config.image_size, config.image_size / 64.0

    n = int(rng.integers(objects[0], objects[1] + 1))
    classes = rng.integers(1, config.num_classes + 1, size=n)

    # background: a panorama the frame window slides over (still for half of the clips)
    pan = rng.random(3)
    pan_speed = (_PAN_SPEED[0] + (_PAN_SPEED[1] - _PAN_SPEED[0]) * pan[1]) * scale if pan[0] < 0.5 else 0.0
    pan_velocity = pan_speed * np.array([math.sin(pan[2] * math.tau), math.cos(pan[2] * math.tau)])
    margin = int(math.ceil(pan_speed * max(frames - 1, 0))) + 1
    panorama = _background(rng, dataclasses.replace(config, image_size=size + 2 * margin))
    _paint_clutter(panorama, config, rng, size)

    sprites = [_sprite(config, rng, int(c), scale) for c in classes]
    min_visible = max(1.0 - config.max_occlusion, 0.25)
    for _ in range(_PLACEMENT_TRIES):
        for sprite in sprites:
            m = 0.3 * sprite.radius
            sprite.start = m + (size - 2 * m) * rng.random(2)
        if _visible_enough(sprites, frames, size, min_visible):
            break

    images = np.empty((frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((frames, size, size), dtype=np.uint8)
    grid = np.arange(size, dtype=np.float64)
    for t in range(frames):
        oy, ox = margin + pan_velocity * t
        if pan_speed == 0.0:
            canvas = panorama[margin : margin + size, margin : margin + size].copy()
        else:
            canvas = _bilinear(panorama, (grid + oy)[:, None], (grid + ox)[None, :]).astype(np.float32)
        instance = masks[t]
        for k, sprite in enumerate(sprites, start=1):
            (y0, y1, x0, x1), sdf, rgb = _footprint(sprite, t, frames, size, colour=True)
            region = canvas[y0:y1, x0:x1]
            alpha = np.clip(np.float32(0.5) - sdf, 0.0, 1.0)[..., None]
            region += (rgb - region) * alpha
            np.copyto(instance[y0:y1, x0:x1], np.uint8(k), where=sdf < 0)
        if config.pixel_noise > 0:
            canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(config.pixel_noise)
        images[t] = np.clip(canvas * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
    return images, masks


def write_synthetic_davis(
    out: str | os.PathLike,
    preset: SynthConfig | str | None = None,
    sequences: int = 8,
    frames: int = 12,
    *,
    split: str = "val",
    image_size: int | None = None,
    objects: tuple[int, int] | None = None,
    first: int = 0,
) -> Path:
    """Write ``sequences`` clips of ``frames`` frames at ``out/DAVIS`` in the DAVIS-2017 layout.

    Sequence ``synth<i:04d>`` (``i = first .. first + sequences - 1``) is :func:`render_clip`
    ``(preset, i, frames, split=split)``: ``JPEGImages/480p/<seq>/00000.jpg`` (quality 95, no
    chroma subsampling), ``Annotations/480p/<seq>/00000.png`` (mode 'P', DAVIS/VOC palette,
    instance ids), ``ImageSets/2017/<split>.txt`` listing them, and ``synthetic_clips.json``
    (generator settings). ``image_size`` overrides the preset's frame size. Returns the DAVIS
    folder.
    """
    config = resolve_config(preset)
    if image_size is not None:
        config = dataclasses.replace(config, image_size=int(image_size))
    if sequences < 1:
        raise ValueError(f"write at least one sequence, got {sequences}")
    if frames < 3:
        raise ValueError(
            f"DAVIS scoring skips the first and last frame, so clips need >= 3 frames, got {frames}"
        )
    davis = Path(out) / "DAVIS"
    names = []
    for i in range(first, first + sequences):
        name = clip_name(i)
        images, masks = render_clip(config, i, frames, split=split, objects=objects)
        image_dir = davis / "JPEGImages" / "480p" / name
        mask_dir = davis / "Annotations" / "480p" / name
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            Image.fromarray(images[t]).save(image_dir / f"{t:05d}.jpg", quality=95, subsampling=0)
            save_palette_png(masks[t], mask_dir / f"{t:05d}.png")
        names.append(name)
    sets = davis / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    meta = {
        "generator": "densessl.data.synthetic_clips",
        "config": config.to_dict(),
        "split": split,
        "sequences": names,
        "frames": frames,
        "objects": list(objects) if objects is not None else None,
    }
    (davis / "synthetic_clips.json").write_text(json.dumps(meta, indent=2) + "\n")
    return davis

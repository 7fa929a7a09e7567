"""Semi-supervised video object segmentation by label propagation on frozen features (spec A4).

The protocol of CRW / videowalk (README: ``--topk 10 --videoLen 20 --radius 12 --temperature
0.05 --cropSize -1``), with no fine-tuning:

1. Every frame of a sequence goes once through the frozen encoder (ImageNet normalisation; by
   default at its own resolution, as ``cropSize -1``) and each location's feature is
   L2-normalised. For a standard ResNet the encoder is CRW's: the last stage removed and
   ``layer3`` at stride 1, a stride-8 map (``encoder="crw"``, chosen by ``"auto"``); a
   small-input ResNet is already at stride 8 and a ViT gives its grid of patch tokens (no class
   token; frames resized to the nearest multiple of the patch size, see
   :mod:`densessl.eval.features`), so both are used whole (``"full"``). ``radius`` counts
   feature cells, so it spans 16 px per cell on a ViT/16 against CRW's 8.
2. The first-frame annotation is one-hot encoded per object id (0 = background, 1..n objects)
   and resized bilinearly to the feature grid.
3. :func:`propagate`: frame ``t`` attends to a context of the first frame (long-term memory, all
   locations) and the ``context`` frames before it (the video is padded at the start with copies
   of frame 0, so early frames see frame 0 repeatedly); in those short-term frames only
   locations at a Euclidean grid distance ``< radius`` count. The affinities (cosines) are
   divided by ``temperature``; the ``topk`` largest over the whole context are kept and
   softmax-normalised, and frame ``t``'s soft labels are the weighted sum of those neighbours'
   soft labels. Predictions become context for later frames.
4. Each frame's soft labels are upsampled bilinearly to the annotation size and the argmax is
   the predicted object id.
5. Scoring: :mod:`densessl.eval.davis_metrics` (J, F, J&F as ``davis2017-evaluation``), with the
   figures in **percent**, as the DAVIS tables print them.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densessl.errors import ConfigError, DataError
from densessl.eval.davis_metrics import SUMMARY_KEYS, evaluate_sequence, summarize
from densessl.eval.features import extract

__all__ = [
    "CRW_DEFAULTS",
    "ENCODER_MODES",
    "labels_to_ids",
    "one_hot_labels",
    "propagate",
    "run_davis",
    "video_encoder",
]

#: the CRW evaluation settings (videowalk README command; spec A4)
CRW_DEFAULTS: dict[str, float | int] = {"topk": 10, "context": 20, "radius": 12.0, "temperature": 0.05}
ENCODER_MODES: tuple[str, ...] = ("auto", "crw", "full")


def check_params(topk: int, context: int, radius: float, temperature: float) -> None:
    """Raise :class:`ConfigError` for propagation settings that cannot work."""
    if topk < 1:
        raise ConfigError(f"topk must be at least 1, got {topk}")
    if context < 0:
        raise ConfigError(f"the context (number of preceding frames) must be non-negative, got {context}")
    if not radius > 0:
        raise ConfigError(f"the spatial radius must be positive (in feature cells), got {radius}")
    if not temperature > 0:
        raise ConfigError(f"the temperature must be positive, got {temperature}")


# ----------------------------------------------------------------------------------------------
# encoder
# ----------------------------------------------------------------------------------------------


class _ResNetRes4(nn.Module):
    """A ResNet up to ``layer3`` with that stage's stride set to 1 (CRW's video encoder)."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        net = copy.deepcopy(resnet)
        for module in net.layer3[0].modules():
            if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
                module.stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        convs = [m for m in net.layer3[-1].modules() if isinstance(m, nn.Conv2d)]
        self.out_channels = convs[-1].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def video_encoder(backbone: nn.Module, mode: str = "auto") -> nn.Module:
    """The network whose map is propagated.

    ``"crw"``: a (deep) copy of a ResNet without ``layer4`` and with ``layer3`` at stride 1, so a
    standard ResNet gives a stride-8 map as in CRW. ``"full"``: the backbone as it is.
    ``"auto"``: ``"crw"`` for a ResNet with the standard stem (stride 32 otherwise), ``"full"`` for
    a small-input ResNet (already stride 8) or any other backbone.
    """
    if mode not in ENCODER_MODES:
        raise ConfigError(f"unknown encoder mode {mode!r}; choose one of {', '.join(ENCODER_MODES)}")
    is_resnet = all(hasattr(backbone, name) for name in ("conv1", "layer1", "layer2", "layer3", "layer4"))
    if mode == "auto":
        mode = "crw" if is_resnet and not getattr(backbone, "small_input", False) else "full"
    if mode == "full":
        return backbone
    if not is_resnet:
        raise ConfigError(f"encoder mode 'crw' needs a ResNet backbone, got {type(backbone).__name__}")
    return _ResNetRes4(backbone).eval()


# ----------------------------------------------------------------------------------------------
# propagation
# ----------------------------------------------------------------------------------------------


def one_hot_labels(ids: np.ndarray, num_objects: int, size: tuple[int, int]) -> torch.Tensor:
    """(num_objects + 1, h, w) float one-hot of an id map, resized bilinearly to ``size``.

    Void (255) pixels, and ids above ``num_objects``, belong to no channel.
    """
    ids_t = torch.from_numpy(np.ascontiguousarray(ids)).long()
    channels = torch.arange(num_objects + 1).view(-1, 1, 1)
    onehot = (ids_t[None] == channels).float()
    if tuple(onehot.shape[-2:]) != tuple(size):
        onehot = F.interpolate(onehot[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return onehot


def labels_to_ids(soft: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Upsample (L, h, w) soft labels bilinearly to ``size`` and take the argmax: uint8 ids."""
    if tuple(soft.shape[-2:]) != tuple(size):
        soft = F.interpolate(soft[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    return soft.argmax(0).to(torch.uint8).cpu().numpy()


def _context_frames(t: int, context: int) -> list[int]:
    """Short-term context of frame ``t``: the ``context`` frames before it, frame 0 padding."""
    return [max(j, 0) for j in range(t - context, t)]


@torch.no_grad()
def propagate(
    features: torch.Tensor,
    first_label: torch.Tensor,
    *,
    topk: int = 10,
    context: int = 20,
    radius: float = 12.0,
    temperature: float = 0.05,
    tile: int = 16,
) -> torch.Tensor:
    """Propagate ``first_label`` (L, h, w) through a clip's features (T, C, h, w): (T, L, h, w).

    Pure function of its inputs (see the module docstring for the rule); frame 0's output is
    ``first_label`` itself. The features are L2-normalised per location here. Runs on the
    device of ``features``. Query locations are processed in ``tile`` x ``tile`` blocks, each
    compared with the whole first frame and with only the window of short-term locations that
    can lie within ``radius``.
    """
    check_params(topk, context, radius, temperature)
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    if features.ndim != 4:
        raise ValueError(f"features must be (T, C, h, w), got shape {tuple(features.shape)}")
    n_frames, _, h, w = features.shape
    if first_label.ndim != 3 or tuple(first_label.shape[-2:]) != (h, w):
        raise ValueError(f"first_label must be (L, {h}, {w}), got shape {tuple(first_label.shape)}")
    device = features.device
    feats = F.normalize(features.float(), dim=1)
    n_labels = first_label.shape[0]
    labels = torch.empty(n_frames, n_labels, h, w, device=device)
    labels[0] = first_label.to(device=device, dtype=torch.float32)

    reach = math.ceil(radius) - 1  # the largest grid offset with distance < radius
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    long_keys = feats[0].reshape(feats.shape[1], h * w)  # (C, hw)
    long_labels = labels[0].reshape(n_labels, h * w).T  # (hw, L)

    for t in range(1, n_frames):
        frames = _context_frames(t, context)
        unique = sorted(set(frames))
        slot = torch.tensor([unique.index(j) for j in frames], device=device)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                query = feats[t, :, y0:y1, x0:x1].reshape(feats.shape[1], -1).T  # (q, C)
                scores = [query @ long_keys]  # (q, hw): first frame, no radius limit
                values = [long_labels]
                if frames:
                    wy0, wy1 = max(y0 - reach, 0), min(y1 + reach, h)
                    wx0, wx1 = max(x0 - reach, 0), min(x1 + reach, w)
                    keys = feats[unique, :, wy0:wy1, wx0:wx1].flatten(2)  # (U, C, win)
                    sim = torch.matmul(query[None], keys)[slot]  # (N, q, win)
                    qy, qx = ys[y0:y1, x0:x1].reshape(-1, 1), xs[y0:y1, x0:x1].reshape(-1, 1)
                    ky, kx = ys[wy0:wy1, wx0:wx1].reshape(1, -1), xs[wy0:wy1, wx0:wx1].reshape(1, -1)
                    near = (qy - ky) ** 2 + (qx - kx) ** 2 < radius**2  # (q, win)
                    sim = sim.masked_fill(~near[None], float("-inf"))
                    scores.append(sim.permute(1, 0, 2).reshape(query.shape[0], -1))
                    win_labels = labels[unique, :, wy0:wy1, wx0:wx1].flatten(2)[slot]  # (N, L, win)
                    values.append(win_labels.permute(0, 2, 1).reshape(-1, n_labels))
                all_scores = torch.cat(scores, dim=1)
                k = min(topk, all_scores.shape[1])
                top, index = all_scores.topk(k, dim=1)
                weights = torch.softmax(top / temperature, dim=1)  # (q, k)
                neighbours = torch.cat(values, dim=0)[index]  # (q, k, L)
                pred = (weights[..., None] * neighbours).sum(1)  # (q, L)
                labels[t, :, y0:y1, x0:x1] = pred.T.reshape(n_labels, y1 - y0, x1 - x0)
    return labels


# ----------------------------------------------------------------------------------------------
# DAVIS
# ----------------------------------------------------------------------------------------------


def _input_size(shape: tuple[int, int], short_side: int | None) -> tuple[int, int]:
    h, w = shape
    if short_side is None:
        return h, w
    scale = short_side / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _save_ids(ids: np.ndarray, path: Path) -> None:
    from densessl.data.synthetic import save_palette_png

    path.parent.mkdir(parents=True, exist_ok=True)
    save_palette_png(ids, path)


def run_davis(
    backbone: nn.Module,
    dataset: Any,
    short_side: int | None = None,
    *,
    topk: int = 10,
    context: int = 20,
    radius: float = 12.0,
    temperature: float = 0.05,
    encoder: str = "auto",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    save_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Label propagation on every sequence of ``dataset`` (a :class:`~densessl.data.davis.DAVIS2017`)
    and its DAVIS scores.

    Frames enter the encoder at their own size, or resized so that their short side is
    ``short_side``; predictions are always scored at the annotation size. ``save_dir`` also
    writes the predictions as DAVIS result PNGs ``<save_dir>/<seq>/<frame>.png``.

    Returns the DAVIS summary in percent (``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``,
    ``F-Mean``, ``F-Recall``, ``F-Decay``: means over all objects), ``sequences`` (per sequence:
    frames, objects, feature grid, J-Mean / F-Mean / J&F-Mean over its objects and ``per_object``),
    counts, the settings and ``seconds``.
    """
    check_params(topk, context, radius, temperature)
    if short_side is not None and short_side < 1:
        raise ConfigError(f"the short side must be a positive number of pixels, got {short_side}")
    start = time.perf_counter()
    net = video_encoder(backbone, encoder)
    resolved = "full" if net is backbone else "crw"
    device = torch.device(device)
    scores = []
    per_sequence: dict[str, dict[str, Any]] = {}
    n_frames = 0
    for name in dataset.sequences:
        frames = dataset.frames(name)
        gt = dataset.annotations(name)
        if gt.shape[0] != len(frames):
            raise DataError(f"sequence {name!r} has {len(frames)} frames but {gt.shape[0]} annotations")
        if len(frames) < 3:
            raise DataError(f"sequence {name!r} has {len(frames)} frames; DAVIS scoring needs at least 3")
        first = gt[0]
        ids = first[first != 255]
        num_objects = int(ids.max()) if ids.size else 0
        if num_objects == 0:
            raise DataError(f"the first annotation of sequence {name!r} holds no object")
        size = _input_size(first.shape, short_side)
        feats = extract(net, frames, size, batch_size=batch_size, device=device, cache_dir=cache_dir).dense
        grid = tuple(feats.shape[-2:])
        soft = propagate(
            feats.to(device),
            one_hot_labels(first, num_objects, grid),
            topk=topk,
            context=context,
            radius=radius,
            temperature=temperature,
        )
        pred = np.stack([labels_to_ids(soft[t], first.shape) for t in range(soft.shape[0])])
        pred[0] = np.where(first == 255, 0, first)
        if save_dir is not None:
            for t, stem in enumerate(dataset.frame_names(name)):
                _save_ids(pred[t], Path(save_dir) / name / f"{stem}.png")
        seq_scores = evaluate_sequence(gt, pred, name, num_objects=num_objects)
        scores.append(seq_scores)
        objects = seq_scores.object_statistics()
        jm = 100.0 * float(np.mean([o["J-Mean"] for o in objects]))
        fm = 100.0 * float(np.mean([o["F-Mean"] for o in objects]))
        per_sequence[name] = {
            "frames": len(frames),
            "objects": num_objects,
            "feature_grid": list(grid),
            "J&F-Mean": round(0.5 * (jm + fm), 4),
            "J-Mean": round(jm, 4),
            "F-Mean": round(fm, 4),
            "per_object": {
                str(k): {"J-Mean": round(100.0 * o["J-Mean"], 4), "F-Mean": round(100.0 * o["F-Mean"], 4)}
                for k, o in enumerate(objects, start=1)
            },
        }
        n_frames += len(frames)
    if not scores:
        raise DataError("the DAVIS split holds no sequence to evaluate")
    summary = summarize(scores)
    return {
        **{key: round(summary[key], 4) for key in SUMMARY_KEYS},
        "units": "percent",
        "num_sequences": len(scores),
        "num_objects": summary["objects"],
        "num_frames": n_frames,
        "split": getattr(dataset, "split", None),
        "short_side": short_side,
        "encoder": resolved,
        "topk": topk,
        "context": context,
        "radius": radius,
        "temperature": temperature,
        "sequences": per_sequence,
        "seconds": round(time.perf_counter() - start, 3),
    }

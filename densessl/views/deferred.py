"""Views whose pixels are decoded on the training device (``data.decode: gpu``).

Loader workers read a JPEG's bytes, parse its header and draw the crop boxes from the header's
size, exactly as for decoding in the worker; the pixels travel as bytes. On the training device
the batch's JPEGs are decoded together (:func:`densessl.data.decode.decode_jpegs`: nvjpeg on
CUDA), turned upright, and each view is cropped, resized and mirrored by the same
:meth:`ViewSampler.crop` as in the worker, on the device. The boxes are therefore the same as on
the CPU path; the crops equal full-size CPU decoding up to the decoders' rounding, and differ from
the worker's reduced-size decoding (1/2-1/8 of large JPEGs) by interpolation alone.

A file the device cannot decode is handed to PIL on the CPU. If PIL rejects it too, policy
``error`` stops the run naming it, and policy ``skip`` replaces the sample, crops, geometry and
targets, by the batch's next readable sample and reports it like a skip in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from densessl.data.decode import EncodedImage, decode_jpegs
from densessl.errors import CorruptImageError, DataError
from densessl.views.geometry import Box, ViewRecord
from densessl.views.sampler import ViewSampler

__all__ = ["DeferredImage", "complete_views"]


@dataclass(frozen=True)
class DeferredImage:
    """A JPEG whose views are cropped on the training device: its bytes and what the boxes need."""

    path: str
    #: the file's bytes, uint8 ``(N,)`` on the CPU
    data: torch.Tensor
    #: the EXIF orientation tag the pixels are stored with
    orientation: int
    #: the upright ``(height, width)`` the boxes were drawn in
    size: tuple[int, int]
    #: each view's output ``(height, width)``
    view_sizes: tuple[tuple[int, int], ...]


def _decode_with_pil(item: DeferredImage, device: torch.device) -> torch.Tensor:
    return EncodedImage(item.path, bytearray(item.data.numpy().tobytes())).decode().to(device)


def _records(batch: dict[str, Any], row: int, sampler: ViewSampler) -> list[ViewRecord]:
    boxes, flips, accepted = (
        batch["boxes"][row].tolist(),
        batch["flips"][row].tolist(),
        batch["accepted"][row],
    )
    return [
        ViewRecord(
            box=Box(*box),
            flipped=bool(flipped),
            size=(spec.size, spec.size),
            reference=spec.reference,
            accepted=bool(accepted[v]),
        )
        for v, (spec, box, flipped) in enumerate(zip(sampler.specs, boxes, flips, strict=True))
    ]


def complete_views(
    batch: dict[str, Any],
    sampler: ViewSampler,
    device: torch.device,
    corrupt: Literal["skip", "error"] = "skip",
) -> list[torch.Tensor]:
    """Each view's uint8 ``(B, 3, S, S)`` crops on ``device``, the deferred rows decoded there.

    A collated batch without deferred rows is only moved. The batch is updated in place: its
    ``crops`` become the device crops and ``deferred`` empties, so a second call only moves. Under
    policy ``skip`` an unreadable deferred file is replaced in ``batch`` (every per-sample field),
    counted in ``batch["skipped"]`` and named in ``batch["unreadable"]``.
    """
    crops = [c.to(device, non_blocking=True) for c in batch["crops"]]
    deferred: list[tuple[int, DeferredImage]] = batch.get("deferred") or []
    batch["crops"], batch["deferred"] = crops, []
    if not deferred:
        return crops
    images = decode_jpegs([d.data for _, d in deferred], [d.orientation for _, d in deferred], device)
    unreadable: list[int] = []
    for (row, item), image in zip(deferred, images, strict=True):
        if image is None or tuple(image.shape[-2:]) != item.size:
            # nvjpeg refused it, or read the orientation differently: PIL decides, as in the worker
            try:
                image = _decode_with_pil(item, device)
            except CorruptImageError as exc:
                if corrupt == "error":
                    raise DataError(f"{exc} (set data.corrupt=skip to skip such images)") from exc
                unreadable.append(row)
                batch["unreadable"] = sorted({*batch["unreadable"], item.path})
                continue
        for v, view in enumerate(sampler.crop(image, _records(batch, row, sampler), item.size)):
            crops[v][row] = view
    if unreadable:
        _replace_rows(batch, crops, unreadable)
    return crops


def _replace_rows(batch: dict[str, Any], crops: list[torch.Tensor], rows: list[int]) -> None:
    size = int(crops[0].shape[0])
    bad = set(rows)
    if len(bad) == size:
        raise DataError(f"none of the {size} images of a batch is readable; e.g. {batch['unreadable'][0]}")
    for row in rows:
        # the next readable row, wrapping: the same substitute on every process that sees this batch
        donor = next((row + k) % size for k in range(1, size) if (row + k) % size not in bad)
        for view in crops:
            view[row] = view[donor]
        for key in ("boxes", "flips", "accepted", "image_sizes"):
            batch[key][row] = batch[key][donor]
        for value in batch["targets"].values():
            value[row] = value[donor]
        batch["skipped"] += 1

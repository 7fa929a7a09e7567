"""From an image source to batches of crops with their geometry.

Randomness is a function of (seed, epoch, image index) for crops and of (seed, epoch) for the
order of images, so a run resumed mid-epoch sees exactly the batches the uninterrupted run
would have seen, whatever the number of loader workers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import torch
from torch.utils.data import Dataset

from densessl.data.base import CorruptImageError, DataError, ImageSource
from densessl.views.deferred import DeferredImage
from densessl.views.geometry import ViewRecord
from densessl.views.sampler import ViewSampler, records_to_tensors

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: default share of the dataset that may be unreadable under ``data.corrupt=skip`` before a run
#: stops: enough for a broken sub-folder among many good ones, too little for a wrong folder
DEFAULT_MAX_SKIPPED_FRACTION = 0.1


def check_skip_budget(
    skipped_distinct_or_total: int,
    dataset_size: int,
    fraction: float,
    example: str | None = None,
) -> None:
    """Raise :class:`DataError` when more than ``fraction`` of ``dataset_size`` images are unreadable.

    Pass the number of *distinct* unreadable files where it is known: a total of skips counts a
    file again each time it is passed over (every epoch, and by each of the broken images before
    it in a run of them), so it overstates the damage. ``example`` names one unreadable file in
    the message.
    """
    # the epsilon keeps products such as 0.29 * 100 = 28.999... from losing an image
    budget = int(fraction * dataset_size + 1e-9)
    if skipped_distinct_or_total <= budget:
        return
    where = f"; e.g. {example}" if example else ""
    raise DataError(
        f"found {skipped_distinct_or_total} unreadable images among {dataset_size}, more than the skip "
        f"budget of {budget} (data.max_skipped_fraction={fraction:g}){where}; repair or remove them, "
        "or raise data.max_skipped_fraction"
    )


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    digest = hashlib.blake2b("-".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class MultiViewDataset(Dataset):
    """Item ``(epoch, index)`` -> the crops of image ``index`` drawn for ``epoch``.

    An unreadable image is, under policy ``skip``, reported once per process with a warning and
    replaced by the next readable image in source order, so the substitute is the same in every
    process and worker. The item counts how many images were passed over (``skipped``) and names
    them (``unreadable``), so the trainer can log the count and check the skip budget on the
    distinct files of all workers. Each process also checks the budget on the distinct
    unreadable files it has met: more than ``max_skipped_fraction`` of the dataset raises
    :class:`DataError` (a wrong or broken folder, not a few bad files). Under policy ``error``
    the first unreadable image raises :class:`DataError` naming the file.
    """

    def __init__(
        self,
        source: ImageSource,
        sampler: ViewSampler,
        seed: int,
        corrupt: Literal["skip", "error"] = "skip",
        *,
        max_skipped_fraction: float = DEFAULT_MAX_SKIPPED_FRACTION,
        targets: Callable[[list[ViewRecord], tuple[int, int]], dict[str, torch.Tensor]] | None = None,
        max_reduction: int = 8,
        defer_jpeg: bool = False,
    ) -> None:
        if len(source) == 0:
            raise DataError("the image source is empty")
        if not 0.0 <= max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction must lie in [0, 1], got {max_skipped_fraction}")
        self.source = source
        self.sampler = sampler
        self.seed = seed
        self.corrupt = corrupt
        self.max_skipped_fraction = max_skipped_fraction
        # JPEG files are decoded at up to 1/max_reduction of their size when every crop allows it
        # (1: always full size)
        self.max_reduction = max_reduction
        # device decoding: a JPEG that allows it leaves the worker as bytes and boxes, its pixels
        # decoded and cropped on the training device (densessl.views.deferred)
        self.defer_jpeg = defer_jpeg
        # the method's per-sample targets, computed here so that they run in the loader workers
        self.targets = targets
        # distinct unreadable files met by this process (bounded by the budget: it raises first)
        self._unreadable: set[str] = set()

    def __len__(self) -> int:
        return len(self.source)

    def _first_readable(self, index: int, read: Callable[[int], _T]) -> tuple[_T, list[str]]:
        """``read`` of the first readable image from ``index`` on, and the unreadable ones passed."""
        size = len(self.source)
        passed: list[str] = []
        for offset in range(size):
            position = (index + offset) % size
            try:
                return read(position), passed
            except CorruptImageError as exc:
                if self.corrupt == "error":
                    raise DataError(f"{exc} (set data.corrupt=skip to skip such images)") from exc
                passed.append(exc.path)
                if exc.path not in self._unreadable:
                    self._unreadable.add(exc.path)
                    log.warning("skipping unreadable image %s: %s", exc.path, exc.reason)
                    check_skip_budget(len(self._unreadable), size, self.max_skipped_fraction, exc.path)
        raise DataError(f"none of the {size} images is readable; e.g. {passed[0]}")

    def _views(
        self, position: int, seed: int
    ) -> tuple[list[torch.Tensor] | DeferredImage, list[ViewRecord], tuple[int, int]]:
        # a fresh generator per attempt: a substitute image gets the draws the requested one would
        generator = torch.Generator().manual_seed(seed)
        encoded = getattr(self.source, "encoded", None)
        if encoded is None:
            image = torch.from_numpy(self.source.load(position)).permute(2, 0, 1)
            crops, records = self.sampler(image, generator)
            return crops, records, (int(image.shape[1]), int(image.shape[2]))
        # files: the boxes come from the header's size, then the pixels are decoded at the
        # largest reduction every view allows (a corrupt body only shows up here)
        file = encoded(position)
        records = self.sampler.sample_records(*file.size, generator)
        if self.defer_jpeg and file.deferrable:
            data = torch.frombuffer(file.data, dtype=torch.uint8)
            view_sizes = tuple(r.size for r in records)
            return DeferredImage(file.path, data, file.orientation, file.size, view_sizes), records, file.size
        reduction = self.sampler.reduction(records, self.max_reduction) if file.can_reduce else 1
        return self.sampler.crop(file.decode(reduction), records, file.size), records, file.size

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        seed = derive_seed(self.seed, epoch, index)
        (crops, records, (height, width)), unreadable = self._first_readable(
            index, lambda position: self._views(position, seed)
        )
        deferred = crops if isinstance(crops, DeferredImage) else None
        return {
            "crops": None if deferred is not None else crops,
            "deferred": deferred,
            **records_to_tensors(records),
            "references": tuple(r.reference for r in records),
            "targets": self.targets(records, (height, width)) if self.targets is not None else {},
            "image_size": torch.tensor([height, width]),
            "skipped": len(unreadable),
            "unreadable": unreadable,
        }


def collate_views(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-view crops into (B, 3, H, W) uint8 batches and the geometry into tensors.

    Every field of the view records survives: ``boxes``, ``flips`` and ``accepted`` as (B, V, ...)
    tensors, ``references`` (the same for every sample: the recipe fixes it) as one tuple. The
    method's ``targets`` are stacked key by key. ``skipped`` sums the images passed over;
    ``unreadable`` lists the distinct files behind them.

    Samples left to device decoding have no crops yet: their rows of ``crops`` stay zero and
    ``deferred`` lists ``(row, DeferredImage)`` for :func:`densessl.views.deferred.complete_views`.
    """
    first = samples[0]
    decoded = next((s for s in samples if s.get("crops") is not None), None)
    if decoded is not None:
        shapes = [tuple(c.shape) for c in decoded["crops"]]
    else:
        shapes = [(3, *size) for size in samples[0]["deferred"].view_sizes]
    deferred = [(row, s["deferred"]) for row, s in enumerate(samples) if s.get("deferred") is not None]
    crops = []
    for v, shape in enumerate(shapes):
        if not deferred:
            crops.append(torch.stack([s["crops"][v] for s in samples]))
            continue
        stacked = torch.zeros((len(samples), *shape), dtype=torch.uint8)
        for row, s in enumerate(samples):
            if s.get("crops") is not None:
                stacked[row] = s["crops"][v]
        crops.append(stacked)
    return {
        "crops": crops,
        "deferred": deferred,
        "boxes": torch.stack([s["boxes"] for s in samples]),
        "flips": torch.stack([s["flips"] for s in samples]),
        "accepted": torch.stack([s["accepted"] for s in samples]),
        "references": first.get("references", ()),
        "targets": {k: torch.stack([s["targets"][k] for s in samples]) for k in first.get("targets", {})},
        "image_sizes": torch.stack([s["image_size"] for s in samples]),
        "skipped": sum(s["skipped"] for s in samples),
        "unreadable": sorted({path for s in samples for path in s.get("unreadable", ())}),
    }


class EpochBatchSampler:
    """Yields this process's batches of ``(epoch, index)`` keys, epoch after epoch.

    Each epoch is a permutation drawn from (seed, epoch); global batch ``b`` is positions
    ``b*G*B .. (b+1)*G*B`` of it and process ``r`` takes the ``r``-th slice of ``B``. Incomplete
    global batches are dropped. Iteration starts at ``start_step`` (a global batch count), so
    resuming needs only the step number.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        world_size: int,
        rank: int,
        seed: int,
        epochs: int,
        start_step: int = 0,
    ) -> None:
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.epochs = epochs
        self.start_step = start_step
        self.steps_per_epoch = dataset_size // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the dataset has {dataset_size} images, fewer than one global batch of "
                f"{batch_size * world_size}; lower train.batch_size"
            )

    def __len__(self) -> int:
        return max(self.steps_per_epoch * self.epochs - self.start_step, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch_size * self.world_size
        first_epoch = self.start_step // self.steps_per_epoch
        for epoch in range(first_epoch, self.epochs):
            order = torch.randperm(
                self.dataset_size, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, -1))
            )
            first = self.start_step - epoch * self.steps_per_epoch if epoch == first_epoch else 0
            for b in range(first, self.steps_per_epoch):
                start = b * global_batch + self.rank * self.batch_size
                yield [(epoch, int(i)) for i in order[start : start + self.batch_size]]

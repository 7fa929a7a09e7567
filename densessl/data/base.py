"""The contract every image source fulfils, and the errors it raises."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

# defined with every user-facing error; imported here, their historical home, for callers
from densessl.errors import CorruptImageError, DataError  # noqa: F401


@runtime_checkable
class ImageSource(Protocol):
    """A list of images addressed by index.

    ``load(i)`` returns an RGB ``uint8`` array of shape (H, W, 3) or raises
    :class:`CorruptImageError`; it never returns a partially decoded image. ``describe(i)``
    names the image for messages (a path, or ``synthetic:<index>``).
    """

    def __len__(self) -> int: ...

    def load(self, index: int) -> np.ndarray: ...

    def describe(self, index: int) -> str: ...


def checked_index(index: int, n: int, what: str) -> int:
    """``index`` (negative ones count from the end) checked against ``n`` items; ``what`` names
    the collection in the IndexError."""
    if index < 0:
        index += n
    if not 0 <= index < n:
        raise IndexError(f"index {index} out of range for {n} {what}")
    return index


class ImageMaskPairs:
    """Mixin for segmentation datasets that define ``image_path``, ``mask_path``, ``load`` and
    ``load_mask``: names images by path and yields ``(image, mask)`` pairs of matching size."""

    def describe(self, index: int) -> str:
        return str(self.image_path(index))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = self.load(index)
        mask = self.load_mask(index)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"mask {self.mask_path(index)} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return image, mask

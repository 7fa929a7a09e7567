"""Decoding image files for pre-training: straight into uint8 ``(3, H, W)`` tensors, upright.

An :class:`EncodedImage` holds a file's bytes and what its header says (format, mode, EXIF
orientation, upright size) without decoding the pixels, so crop boxes can be drawn in original
pixels first and the pixels decoded afterwards, possibly at a reduced size:

* RGB and grey JPEGs at full size go through ``torchvision.io.decode_jpeg`` (libjpeg-turbo), which
  writes the ``(3, H, W)`` tensor directly: about half the CPU time of PIL plus two numpy copies;
* everything else (PNG, BMP, WebP, TIFF, CMYK JPEGs, and any JPEG that libjpeg-turbo refuses)
  goes through PIL and is converted to RGB as :func:`densessl.data.sources.decode_image` does;
* a JPEG decoded at ``1/2``, ``1/4`` or ``1/8`` of its size uses PIL's draft mode, which scales in
  the DCT domain and so skips most of the decoding work.

EXIF orientation is applied on every path (decode_jpeg's ``apply_exif_orientation`` and
``ImageOps.exif_transpose`` implement the same eight cases), so sizes and boxes always refer to
the upright image. A file that cannot be decoded raises :class:`CorruptImageError`; PIL has the
last word, so a file is called corrupt exactly when the PIL decoder rejects it.
"""

from __future__ import annotations

import io
import os
import warnings

import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg

from densessl.errors import CorruptImageError

__all__ = ["REDUCTIONS", "EncodedImage", "open_image", "read_image"]

#: the size reductions PIL's JPEG draft mode can do in the DCT domain
REDUCTIONS: tuple[int, ...] = (1, 2, 4, 8)

_EXIF_ORIENTATION = 0x0112
# orientations 5..8 turn the stored image by a quarter turn: width and height swap
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# header modes whose JPEGs decode_jpeg turns into the same RGB as PIL's conversion does
_FAST_JPEG_MODES = ("RGB", "L")

# torchvision 0.29 warns on every use of its image decoders that they will move to another
# package; the call stays valid, and a warning per image would flood the loader's log
warnings.filterwarnings("ignore", message=r"The image decoding and encoding capabilities of TorchVision")


class EncodedImage:
    """One image file in memory, header parsed, pixels not yet decoded.

    ``size`` is the upright ``(height, width)`` in original pixels. :meth:`decode` returns the
    upright uint8 ``(3, h, w)`` image, at full size or reduced by a factor from
    :data:`REDUCTIONS` (the actual size may round up: use the returned shape, not ``size /
    reduction``). Formats other than JPEG are decoded right away, here: their EXIF may follow
    the pixels (PIL reads a PNG's whole file to find it), and they have no cheaper reduced
    decode to wait for.
    """

    def __init__(self, path: str, data: bytearray) -> None:
        self.path = path
        self.data = data
        self._pixels: torch.Tensor | None = None
        if not data:
            raise CorruptImageError(path, "empty file (0 bytes)")
        try:
            with Image.open(io.BytesIO(data)) as img:
                self.format = img.format or ""
                self.mode = img.mode
                stored_width, stored_height = img.size
                if self.format == "JPEG":
                    # EXIF sits in the APP1 segment, before the pixels: reading it is cheap
                    orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                else:
                    self._pixels = self._upright(img)
        except CorruptImageError:
            raise
        except Exception as exc:  # PIL plugins raise many types on malformed headers
            raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
        if self._pixels is not None:
            self.size: tuple[int, int] = (int(self._pixels.shape[1]), int(self._pixels.shape[2]))
            return
        if stored_width <= 0 or stored_height <= 0:
            raise CorruptImageError(path, f"the header gives an empty size {stored_width}x{stored_height}")
        swap = orientation in _SWAPPING_ORIENTATIONS
        self.size = (stored_width, stored_height) if swap else (stored_height, stored_width)

    @property
    def can_reduce(self) -> bool:
        """Whether :meth:`decode` with a reduction saves decoding work (JPEGs only)."""
        return self.format == "JPEG"

    def decode(self, reduction: int = 1) -> torch.Tensor:
        """The upright uint8 ``(3, h, w)`` image, ``h ~ height / reduction`` (rounded up)."""
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction}")
        if self._pixels is not None:
            return self._pixels
        if reduction == 1 and self.mode in _FAST_JPEG_MODES:
            image = self._decode_jpeg()
            if image is not None:
                return image
        return self._decode_pil(reduction)

    def _decode_jpeg(self) -> torch.Tensor | None:
        encoded = torch.frombuffer(self.data, dtype=torch.uint8)  # shares the bytes
        try:
            image = decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except RuntimeError:
            # truncated data or a variant libjpeg-turbo refuses: PIL decides whether it is corrupt
            return None
        if image.shape[1:] != self.size:
            # the two readers disagree on the EXIF orientation (a malformed tag): PIL's reading,
            # which gave the size the boxes were drawn in, wins
            return None
        return image

    def _decode_pil(self, reduction: int) -> torch.Tensor:
        try:
            with Image.open(io.BytesIO(self.data)) as img:
                if reduction > 1:
                    width, height = img.size
                    # draft picks the largest DCT scale whose result is at least this size
                    img.draft("RGB", (max(width // reduction, 1), max(height // reduction, 1)))
                return self._upright(img)
        except CorruptImageError:
            raise
        except Exception as exc:  # PIL plugins raise many types on malformed data
            raise CorruptImageError(self.path, f"{type(exc).__name__}: {exc}") from exc

    def _upright(self, img: Image.Image) -> torch.Tensor:
        from densessl.data.sources import to_rgb_array  # sources imports this module

        img.load()
        # in place: otherwise an image without an orientation tag is copied for nothing
        ImageOps.exif_transpose(img, in_place=True)
        array = to_rgb_array(img)
        if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
            raise CorruptImageError(self.path, f"decoded to an unexpected shape {array.shape}")
        # a (3, H, W) view of the (H, W, 3) array: the crop resamples from it without a copy
        return torch.from_numpy(array).permute(2, 0, 1)


def open_image(path: str | os.PathLike) -> EncodedImage:
    """Read the file at ``path`` and parse its header; raises :class:`CorruptImageError`."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            # a bytearray, not bytes: torch.frombuffer shares writable buffers without a warning
            data = bytearray(os.fstat(f.fileno()).st_size)
            read = f.readinto(data)
    except OSError as exc:
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
    if read != len(data):
        raise CorruptImageError(path, f"read {read} of {len(data)} bytes; the file changed while being read")
    return EncodedImage(path, data)


def read_image(path: str | os.PathLike, reduction: int = 1) -> torch.Tensor:
    """Decode the file at ``path`` into an upright uint8 ``(3, H, W)`` tensor (see module doc)."""
    return open_image(path).decode(reduction)

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

EXIF orientation is applied on every path (decode_jpeg's ``apply_exif_orientation``,
``ImageOps.exif_transpose`` and :func:`orient` implement the same eight cases), so sizes and boxes
always refer to the upright image. A file that cannot be decoded raises
:class:`CorruptImageError`; PIL has the last word, so a file is called corrupt exactly when the
PIL decoder rejects it.

Device decoding (``data.decode: gpu``) leaves a JPEG's pixels to the training process:
:attr:`EncodedImage.deferrable` says which files qualify (plain RGB or grey JPEGs whose data ends
with the end-of-image marker, so a truncated file is still decoded, and judged, in the worker),
and :func:`decode_jpegs` decodes a batch of them on the device (nvjpeg on CUDA), turned upright
by :func:`orient`.
"""

from __future__ import annotations

import io
import os
import warnings

import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg

from densessl.errors import CorruptImageError

__all__ = ["REDUCTIONS", "EncodedImage", "decode_jpegs", "open_image", "orient", "read_image"]

#: the size reductions PIL's JPEG draft mode can do in the DCT domain
REDUCTIONS: tuple[int, ...] = (1, 2, 4, 8)

_EXIF_ORIENTATION = 0x0112
# orientations 5..8 turn the stored image by a quarter turn: width and height swap
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# header modes whose JPEGs decode_jpeg turns into the same RGB as PIL's conversion does
_FAST_JPEG_MODES = ("RGB", "L")
# a JPEG's end-of-image marker; encoders may pad a few bytes after it
_JPEG_EOI = b"\xff\xd9"
_EOI_SEARCH = 64

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
        #: the EXIF orientation tag (1..8) of a JPEG; other formats are upright once decoded
        self.orientation = 1
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
                    self.orientation = orientation if 1 <= orientation <= 8 else 1
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

    @property
    def deferrable(self) -> bool:
        """Whether the pixels may be left to :func:`decode_jpegs` on the training device.

        Only JPEGs that decode to RGB as PIL would (RGB or grey) and whose data ends with the
        end-of-image marker: a truncated file is decoded in the worker, where the skip policy
        handles it like any other unreadable image.
        """
        return (
            self.format == "JPEG"
            and self.mode in _FAST_JPEG_MODES
            and _JPEG_EOI in bytes(self.data[-_EOI_SEARCH:])
        )

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


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a ``(C, H, W)`` image stored with EXIF ``orientation`` (1..8) upright, as
    ``ImageOps.exif_transpose`` does; works on any device."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:  # PIL's TRANSPOSE: mirror along the main diagonal
        return image.transpose(-2, -1)
    if orientation == 6:  # PIL's ROTATE_270: a quarter turn clockwise
        return image.rot90(-1, dims=(-2, -1))
    if orientation == 7:  # PIL's TRANSVERSE: mirror along the other diagonal
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:  # PIL's ROTATE_90: a quarter turn counter-clockwise
        return image.rot90(1, dims=(-2, -1))
    return image


def decode_jpegs(
    data: list[torch.Tensor], orientations: list[int], device: torch.device
) -> list[torch.Tensor | None]:
    """Decode JPEG byte tensors (on the CPU) into upright uint8 ``(3, H, W)`` images on ``device``.

    On CUDA the whole list goes to nvjpeg in one batched call; elsewhere libjpeg-turbo decodes
    them one by one. An image that fails to decode comes back as ``None`` (the batch is retried
    one image at a time to find it), so the caller can hand that file to PIL.
    """
    if not data:
        return []
    try:
        images: list[torch.Tensor | None] = list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        images = []
        for one in data:
            try:
                images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(None)
    return [None if img is None else orient(img, o) for img, o in zip(images, orientations, strict=True)]


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

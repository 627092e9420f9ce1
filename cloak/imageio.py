"""Decoding user photos safely and writing results without silent re-encoding."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import write_atomic
from .errors import BadOptionError, ImageDecodeError, ImageTooLargeError

try:  # HEIC support is optional at run time; the wheel is a declared dependency.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    pass


@dataclass(frozen=True)
class ImageLimits:
    """Guards against oversized uploads and decompression bombs."""

    max_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 64_000_000


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode (L, LA, P, CMYK, RGBA, I;16, I, F) to an HxWx3 uint8 RGB array."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I") and arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)  # transparent pixels become white, not black
    if img.mode != "RGB":  # convert() to the same mode would copy a full-size image for nothing
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


@contextmanager
def _opened(data: bytes, limits: ImageLimits) -> Iterator[Image.Image]:
    """The image, opened from its header only, within ``limits``; decoding errors inside map to ours."""
    if not data:
        raise ImageDecodeError("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > limits.max_pixels:
                    raise ImageTooLargeError(
                        f"the image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels"
                    )
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"the image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("the data is not an image format we can read (JPEG, PNG, WebP, HEIC...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"the image is corrupt or truncated: {exc}") from None


def probe_image(data: bytes, limits: ImageLimits = ImageLimits()) -> tuple[int, int]:
    """(width, height) read from the header alone, within ``limits``: what decoding would cost, before paying it."""
    with _opened(data, limits) as img:
        return img.size


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode image bytes to RGB uint8 (H, W, 3), honouring EXIF orientation.

    Raises ImageDecodeError for empty/corrupt/non-image data and ImageTooLargeError for
    inputs above ``limits`` (checked before the pixels are decoded).
    """
    with _opened(data, limits) as img:
        img.load()
        # In place: a copy would hold a second full-size image while the first is still alive.
        ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb8(img)


def read_image(path: str | Path, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Read and decode an image file (see ``decode_image``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageDecodeError(f"{path} is a directory, not an image") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return decode_image(data, limits)
    except (ImageDecodeError, ImageTooLargeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
_LOSSY = ("JPEG", "WEBP")


def check_jpeg_quality(quality: int) -> int:
    """``quality`` if it is a JPEG/WebP quality (1..100), else BadOptionError."""
    if not 1 <= quality <= 100:
        raise BadOptionError(f"the JPEG/WebP quality must be in 1..100, got {quality}")
    return quality


def encode_image(rgb: np.ndarray, fmt: str = "PNG", jpeg_quality: int = 95) -> bytes:
    """Encode RGB uint8 to bytes. PNG is lossless; JPEG/WebP only when the caller asks for them."""
    buf = io.BytesIO()
    options = {"quality": check_jpeg_quality(jpeg_quality)} if fmt in _LOSSY else {}
    Image.fromarray(rgb).save(buf, format=fmt, **options)
    return buf.getvalue()


def output_format(path: str | Path) -> str:
    """The Pillow format an output path's extension asks for; BadOptionError for unsupported ones."""
    suffix = Path(path).suffix
    fmt = _FORMATS.get(suffix.lower())
    if fmt is None:
        raise BadOptionError(f"unsupported output extension {suffix!r}; use one of {sorted(_FORMATS)}")
    return fmt


def write_image(path: str | Path, rgb: np.ndarray, jpeg_quality: int = 95) -> np.ndarray:
    """Write RGB uint8 to ``path`` atomically (see ``facecloak.atomic``); the format follows the extension.

    Returns the pixels as written, which is what any quality figure must be measured on: ``rgb``
    itself for lossless formats (PNG keeps every pixel exact), the decoded file for JPEG/WebP.
    """
    fmt = output_format(path)
    data = encode_image(rgb, fmt, jpeg_quality)
    write_atomic(path, data)
    if fmt not in _LOSSY:
        return rgb
    return decode_image(data, ImageLimits(max_bytes=len(data), max_pixels=rgb.shape[0] * rgb.shape[1]))

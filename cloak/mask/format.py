"""The .fcmask binary format: a compact, versioned, integrity-checked identity mask.

Layout (little-endian; docs/mask-format.md is the normative spec):

    0   4  magic b"FCMK"
    4   2  u16 version (1)
    6   2  u16 header size in bytes (29 + model-set length)
    8   2  u16 mask side S in pixels (the mask is S x S)
    10  1  u8  channels (3, RGB)
    11  1  u8  template id (1 = 5-point ArcFace)
    12  4  f32 template scale (zoom-out factor of the aligned frame)
    16  4  f32 quantum: value of one int8 level on the 0..1 pixel scale (1/255 = one grey level)
    20  4  u32 payload size in bytes
    24  4  u32 CRC-32 of the payload
    28  1  u8  model-set length n
    29  n  ASCII model names joined by ","
    29+n   payload: zlib stream of S*S*3 int8 levels, row-major, channel-last (HWC), RGB
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import MaskFormatError
from ..faces.align import AlignedFrame

MAGIC = b"FCMK"
VERSION = 1
_FIXED = struct.Struct("<4sHHHBBffIIB")
TEMPLATE_IDS = {"arcface5": 1}
MAX_SIDE = 1024
MAX_FILE_BYTES = 16 * 1024  # what a 112 px mask must fit in (phones sync it with the user's profile)
_COARSER_QUANTA = (2.0 / 255.0, 3.0 / 255.0, 4.0 / 255.0)


@dataclass(frozen=True)
class Mask:
    """An identity mask: ``delta`` (S, S, 3) float32 on the 0..1 pixel scale, in ``frame``."""

    delta: np.ndarray
    frame: AlignedFrame
    models: tuple[str, ...]
    # Two grey levels per stored step: the mask then fits in 16 KiB at 112 px, and the rounding
    # error (at most one grey level) is below what the budget already allows.
    quantum: float = 2.0 / 255.0

    def levels(self, quantum: float | None = None) -> np.ndarray:
        """The int8 levels that the file stores, at ``quantum`` (default: the mask's own)."""
        return np.clip(np.round(self.delta / (quantum or self.quantum)), -127, 127).astype(np.int8)


def encode_mask(mask: Mask, max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """Serialise a mask (deterministic output for the same input).

    Noise-like masks from few PGD iterations can compress poorly; if the file would exceed
    ``max_bytes`` (at 112 px or less) we re-quantise with the next coarser step of 3/255 or 4/255
    grey levels, the rounding error staying at most two grey levels.
    """
    data = b""
    for quantum in (q for q in (mask.quantum, *_COARSER_QUANTA) if q >= mask.quantum):
        data = _encode(mask, quantum)
        if max_bytes is None or mask.frame.size > 112 or len(data) <= max_bytes:
            return data
    return data


def _encode(mask: Mask, quantum: float) -> bytes:
    names = ",".join(mask.models).encode("ascii")
    if len(names) > 255:
        raise ValueError("model set name too long")
    size = mask.frame.size
    if mask.delta.shape != (size, size, 3):
        raise ValueError(f"delta shape {mask.delta.shape} does not match frame size {size}")
    payload = zlib.compress(mask.levels(quantum).tobytes(), 9)
    header = _FIXED.pack(
        MAGIC, VERSION, _FIXED.size + len(names), size, 3, TEMPLATE_IDS[mask.frame.template],
        mask.frame.scale, quantum, len(payload), zlib.crc32(payload), len(names),
    )
    return header + names + payload


def decode_mask(data: bytes) -> Mask:
    """Parse and verify a mask file; MaskFormatError with the precise reason on any defect."""
    if len(data) < _FIXED.size:
        raise MaskFormatError("not a FaceCloak mask: the file is too short")
    magic, version, header_size, size, channels, template_id, scale, quantum, payload_len, crc, n = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise MaskFormatError("not a FaceCloak mask (bad magic bytes)")
    if version != VERSION:
        raise MaskFormatError(f"mask format version {version} is not supported (this build reads version {VERSION})")
    if header_size != _FIXED.size + n or channels != 3 or not 8 <= size <= MAX_SIDE:
        raise MaskFormatError("mask header is corrupted")
    templates = {v: k for k, v in TEMPLATE_IDS.items()}
    if template_id not in templates:
        raise MaskFormatError(f"mask uses unknown alignment template id {template_id}")
    if not (np.isfinite(scale) and 0.25 <= scale <= 4.0 and np.isfinite(quantum) and 0 < quantum <= 1):
        raise MaskFormatError("mask header is corrupted (scale or quantum out of range)")
    payload = data[header_size:]
    if len(payload) != payload_len:
        raise MaskFormatError(f"mask is truncated or padded: payload {len(payload)} bytes, header says {payload_len}")
    if zlib.crc32(payload) != crc:
        raise MaskFormatError("mask is corrupted (checksum mismatch)")
    try:
        models = tuple(data[_FIXED.size:header_size].decode("ascii").split(","))
        raw = zlib.decompress(payload, bufsize=size * size * 3)
    except (UnicodeDecodeError, zlib.error) as exc:
        raise MaskFormatError(f"mask payload cannot be decoded: {exc}") from None
    if len(raw) != size * size * 3:
        raise MaskFormatError("mask payload has the wrong length")
    levels = np.frombuffer(raw, dtype=np.int8).reshape(size, size, 3)
    frame = AlignedFrame(size=size, scale=float(scale), template=templates[template_id])
    return Mask(delta=levels.astype(np.float32) * np.float32(quantum), frame=frame, models=models, quantum=float(quantum))

"""The .fcmask binary format: a compact, versioned, integrity-checked identity mask.

Layout (little-endian; docs/mask-format.md is the normative spec):

    0   4  magic b"FCMK"
    4   2  u16 version (3 with a perceptual budget, else 2; version 1 files are still read)
    6   2  u16 header size H in bytes (29 + model-set length, + 13 in version 3)
    8   2  u16 mask side S in pixels (the mask is S x S)
    10  1  u8  channels (3, RGB)
    11  1  u8  template id (1 = 5-point ArcFace)
    12  4  f32 template scale (zoom-out factor of the aligned frame)
    16  4  f32 quantum: value of one int8 level on the 0..1 pixel scale (1/255 = one grey level)
    20  4  u32 payload size P in bytes
    24  4  u32 CRC-32 of every other byte of the file (version 1: of the payload only)
    28  1  u8  model-set length n
    29  n  ASCII model names joined by ","
    version 3 only, the perceptual budget (optimise.perceptual; the applier clips the delta to it):
    29+n    1  u8  rule id (1 = local-contrast masking)
    30+n    4  f32 eps: largest amplitude on the 0..1 pixel scale
    34+n    4  f32 floor: share of eps allowed on flat pixels
    38+n    4  f32 contrast: local luma std from which a pixel counts as fully textured
    H      payload: zlib stream of S*S*3 int8 levels, row-major, channel-last (HWC), RGB
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MaskFormatError
from ..faces.align import AlignedFrame
from ..optimise.perceptual import PerceptualBudget

MAGIC = b"FCMK"
VERSION = 2  # what encode_mask writes for a mask without a perceptual budget
PERCEPTUAL_VERSION = 3  # ... and with one: older readers refuse it instead of applying it unclipped
READ_VERSIONS = (1, 2, 3)
_FIXED = struct.Struct("<4sHHHBBffIIB")
_PERCEPTUAL = struct.Struct("<Bfff")
PERCEPTUAL_RULES = {"local-contrast": 1}
_CRC_AT = 24  # offset of the 4-byte CRC field, the only bytes a version-2 CRC does not cover
TEMPLATE_IDS = {"arcface5": 1}
MIN_SIDE, MAX_SIDE = 8, 1024
SCALE_RANGE = (0.25, 4.0)
# Version 2 bounds on what the header and payload may claim. A quantum is between half a grey level
# (127 levels then still span the largest budget) and four (the writer's coarsest); a stored level
# never exceeds the largest budget, 64 grey levels, by more than the half quantum of rounding.
QUANTUM_GREY_RANGE = (0.5, 4.0)
MAX_AMPLITUDE_GREY = 64.0
MAX_FILE_BYTES = 16 * 1024  # what a 112 px mask must fit in (phones sync it with the user's profile)
_COARSER_QUANTA = (2.0 / 255.0, 3.0 / 255.0, 4.0 / 255.0)


def _max_payload(raw_len: int) -> int:
    """zlib's compressBound: no zlib stream of ``raw_len`` bytes is longer."""
    return raw_len + (raw_len >> 12) + (raw_len >> 14) + (raw_len >> 25) + 13


# No valid mask file is larger: readers never need to hold more than this in memory.
MAX_READ_BYTES = _FIXED.size + 255 + _PERCEPTUAL.size + _max_payload(MAX_SIDE * MAX_SIDE * 3)


@dataclass(frozen=True)
class Mask:
    """An identity mask: ``delta`` (S, S, 3) float32 on the 0..1 pixel scale, in ``frame``."""

    delta: np.ndarray
    frame: AlignedFrame
    models: tuple[str, ...]
    # Two grey levels per stored step: the mask then fits in 16 KiB at 112 px, and the rounding
    # error (at most one grey level) is below what the budget already allows.
    quantum: float = 2.0 / 255.0
    perceptual: PerceptualBudget | None = None  # None: applied as stored (versions 1 and 2)

    def levels(self, quantum: float | None = None) -> np.ndarray:
        """The int8 levels that the file stores, at ``quantum`` (default: the mask's own)."""
        return np.clip(np.round(self.delta / (quantum or self.quantum)), -127, 127).astype(np.int8)


def _header_problem(version: int, side: int, template_id: int, scale: float, quantum: float, names: bytes) -> str | None:
    """Why these header values are invalid for ``version`` (None if they are valid); the writer checks the same."""
    if not MIN_SIDE <= side <= MAX_SIDE:
        return f"mask side {side} is out of range ({MIN_SIDE}..{MAX_SIDE})"
    if template_id not in TEMPLATE_IDS.values():
        return f"mask uses unknown alignment template id {template_id}"
    if not (math.isfinite(scale) and SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]):
        return f"mask template scale {scale:g} is out of range ({SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g})"
    if version == 1:  # version 1's own, looser bounds: old files read exactly as they always did
        quantum_ok = math.isfinite(quantum) and 0 < quantum <= 1
    else:  # the tolerance absorbs the f32 rounding of k/255
        low, high = QUANTUM_GREY_RANGE
        quantum_ok = math.isfinite(quantum) and low - 1e-4 <= quantum * 255 <= high + 1e-4
    if not quantum_ok:
        return f"mask quantum {quantum * 255:g} grey levels is out of range"
    if not names.isascii() or (version >= 2 and not names.decode("ascii").isprintable()):
        return "mask model set is not printable ASCII"
    return None


def _levels_problem(levels: np.ndarray, quantum: float) -> str | None:
    """Why the stored levels are invalid in a version-2 file (None if they are valid)."""
    peak = int(np.abs(levels.astype(np.int16)).max(initial=0))
    if peak * quantum * 255 > MAX_AMPLITUDE_GREY + quantum * 255 / 2 + 1e-3 or peak > 127:
        return f"mask amplitude {peak * quantum * 255:.1f} grey levels exceeds the largest budget ({MAX_AMPLITUDE_GREY:g})"
    return None


def _crc(data: bytes | bytearray, version: int, header_size: int) -> int:
    """The file's checksum: version 2 covers every byte except the CRC field, version 1 only the payload."""
    view = memoryview(data)
    if version == 1:
        return zlib.crc32(view[header_size:])
    return zlib.crc32(view[_CRC_AT + 4:], zlib.crc32(view[:_CRC_AT]))


def encode_mask(mask: Mask, max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """Serialise a mask in the current version (deterministic output for the same input).

    Noise-like masks from few PGD iterations can compress poorly; if the file would exceed
    ``max_bytes`` (at 112 px or less) we re-quantise with the next coarser step of 3/255 or 4/255
    grey levels, the rounding error staying at most two grey levels.
    ValueError if the mask cannot be stored (the same bounds the reader enforces).
    """
    data = b""
    for quantum in (q for q in (mask.quantum, *_COARSER_QUANTA) if q >= mask.quantum):
        data = _encode(mask, quantum)
        if max_bytes is None or mask.frame.size > 112 or len(data) <= max_bytes:
            return data
    return data


def _perceptual_problem(cfg: PerceptualBudget) -> str | None:
    """Why a stored perceptual budget is invalid (None if it is valid)."""
    values = (cfg.eps, cfg.floor, cfg.contrast)
    if not all(math.isfinite(v) for v in values):
        return "mask perceptual budget is not finite"
    if not (0 < cfg.eps * 255 <= MAX_AMPLITUDE_GREY + 1e-3 and 0 <= cfg.floor <= 1 and 0 < cfg.contrast <= 1):
        return "mask perceptual budget is out of range"
    return None


def _encode(mask: Mask, quantum: float) -> bytes:
    names = ",".join(mask.models).encode("ascii")
    if len(names) > 255:
        raise ValueError("model set name too long")
    version = VERSION if mask.perceptual is None else PERCEPTUAL_VERSION
    size = mask.frame.size
    if mask.delta.shape != (size, size, 3):
        raise ValueError(f"delta shape {mask.delta.shape} does not match frame size {size}")
    template_id = TEMPLATE_IDS.get(mask.frame.template, 0)
    levels = mask.levels(quantum)
    problem = _header_problem(version, size, template_id, mask.frame.scale, quantum, names) or _levels_problem(levels, quantum)
    extra = b""
    if mask.perceptual is not None:
        problem = problem or _perceptual_problem(mask.perceptual)
        p = mask.perceptual
        extra = _PERCEPTUAL.pack(PERCEPTUAL_RULES["local-contrast"], p.eps, p.floor, p.contrast)
    if problem:
        raise ValueError(problem)
    payload = zlib.compress(levels.tobytes(), 9)
    header_size = _FIXED.size + len(names) + len(extra)
    data = bytearray(_FIXED.pack(
        MAGIC, version, header_size, size, 3, template_id,
        mask.frame.scale, quantum, len(payload), 0, len(names),
    ) + names + extra + payload)
    struct.pack_into("<I", data, _CRC_AT, _crc(data, version, header_size))
    return bytes(data)


def _inflate_exactly(payload: bytes | memoryview, size: int) -> bytes:
    """Inflate a zlib stream that must yield exactly ``size`` bytes, never producing more than ``size`` + 1.

    Incremental on purpose: a small payload can claim gigabytes (a zlib bomb), so the output is
    capped at what the header implies instead of inflating it all and checking afterwards.
    """
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, size)
        # At ``size`` bytes the stream's end code and Adler-32 may still be unread: one more byte of
        # output means the payload is too long, none means the stream must now be complete.
        extra = b"" if inflater.eof else inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error as exc:
        raise MaskFormatError(f"mask payload cannot be decoded: {exc}") from None
    if extra:
        raise MaskFormatError(f"mask payload inflates to more than {size} bytes")
    if not inflater.eof:
        raise MaskFormatError(f"mask payload is an incomplete zlib stream ({len(raw)} of {size} bytes)")
    if inflater.unused_data:
        raise MaskFormatError("mask payload has bytes after the end of its zlib stream")
    if len(raw) != size:
        raise MaskFormatError(f"mask payload inflates to {len(raw)} bytes, expected {size}")
    return raw


def decode_mask(data: bytes) -> Mask:
    """Parse and verify a mask file (version 3, 2 or 1); MaskFormatError with the precise reason on any defect."""
    if len(data) < _FIXED.size:
        raise MaskFormatError("not a FaceCloak mask: the file is too short")
    magic, version, header_size, size, channels, template_id, scale, quantum, payload_len, crc, n = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise MaskFormatError("not a FaceCloak mask (bad magic bytes)")
    if version not in READ_VERSIONS:
        raise MaskFormatError(f"mask format version {version} is not supported (this build reads versions "
                              f"{', '.join(map(str, READ_VERSIONS))})")
    extra = _PERCEPTUAL.size if version == PERCEPTUAL_VERSION else 0
    if header_size != _FIXED.size + n + extra or channels != 3:
        raise MaskFormatError("mask header is corrupted")
    if len(data) != header_size + payload_len:
        raise MaskFormatError(f"mask is truncated or padded: {len(data)} bytes, header says {header_size + payload_len}")
    if _crc(data, version, header_size) != crc:
        raise MaskFormatError("mask is corrupted (checksum mismatch)")
    names = bytes(data[_FIXED.size:_FIXED.size + n])
    problem = _header_problem(version, size, template_id, scale, quantum, names)
    perceptual = None
    if extra:
        rule, eps, floor, contrast = _PERCEPTUAL.unpack_from(data, _FIXED.size + n)
        perceptual = PerceptualBudget(float(eps), float(floor), float(contrast))
        if rule not in PERCEPTUAL_RULES.values():
            problem = problem or f"mask uses unknown perceptual budget rule {rule}"
        problem = problem or _perceptual_problem(perceptual)
    if problem is None and version >= 2 and payload_len > _max_payload(size * size * 3):
        problem = f"mask payload of {payload_len} bytes is larger than any zlib stream of {size * size * 3} bytes"
    if problem:
        raise MaskFormatError(problem)
    raw = _inflate_exactly(memoryview(data)[header_size:], size * size * 3)
    levels = np.frombuffer(raw, dtype=np.int8).reshape(size, size, 3)
    if version >= 2 and (problem := _levels_problem(levels, float(quantum))):
        raise MaskFormatError(problem)
    templates = {v: k for k, v in TEMPLATE_IDS.items()}
    frame = AlignedFrame(size=size, scale=float(scale), template=templates[template_id])
    models = tuple(names.decode("ascii").split(","))
    return Mask(delta=levels.astype(np.float32) * np.float32(quantum), frame=frame, models=models, quantum=float(quantum),
                perceptual=perceptual)


def read_mask(path: str | Path) -> Mask:
    """Read and decode a mask file, never reading more than the largest valid mask (OSError passes through)."""
    with open(path, "rb") as file:
        data = file.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise MaskFormatError(f"not a FaceCloak mask: larger than the largest valid mask ({MAX_READ_BYTES} bytes)")
    return decode_mask(data)

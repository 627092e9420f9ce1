"""Mask sets (issue 14): one enrollment, K masks, one per photo, so cloaked photos cannot be linked.

A set of one is an ordinary version 2/3 file. A larger set is a version 4 file: a small container of
complete member files (docs/mask-format.md):

    0   4  magic b"FCMK"
    4   2  u16 version (4)
    6   2  u16 member count K (2..16)
    8   4  u32 CRC-32 of every other byte of the file
    12     K x (u32 length L, then L bytes: one complete version 2 or 3 mask file)

Members share the frame, the model set and the perceptual budget (one person, one enrollment).
Which member cloaks a photo is ``member_for_photo``: a hash of the photo's pixels, so the choice is
uniform over photos, needs no state, and the same photo always gets the same member (cloaking one
photo twice never hands an attacker two members to compare).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import BadOptionError, MaskFormatError
from .format import MAGIC, MAX_FILE_BYTES, MAX_READ_BYTES, Mask, decode_mask, encode_mask

SET_VERSION = 4
MAX_MEMBERS = 16
_HEAD = struct.Struct("<4sHHI")
_LENGTH = struct.Struct("<I")
MAX_SET_READ_BYTES = _HEAD.size + MAX_MEMBERS * (_LENGTH.size + MAX_READ_BYTES)


def _crc(data: bytes | bytearray) -> int:
    view = memoryview(data)
    return zlib.crc32(view[_HEAD.size:], zlib.crc32(view[:8]))


def _one_enrollment(masks: tuple[Mask, ...] | list[Mask]) -> bool:
    """Do all members share frame, model set and perceptual budget (one person, one enrollment)?"""
    return len({(m.frame, m.models, m.perceptual) for m in masks}) == 1


def encode_mask_set(masks: tuple[Mask, ...], max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """One mask: its own version 2/3 file. Several: a version 4 set (``max_bytes`` applies per member)."""
    if not 1 <= len(masks) <= MAX_MEMBERS:
        raise ValueError(f"a mask set holds 1..{MAX_MEMBERS} masks, got {len(masks)}")
    members = [encode_mask(m, max_bytes) for m in masks]
    if len(members) == 1:
        return members[0]
    if not _one_enrollment(masks):
        raise ValueError("the masks of a set must share frame, model set and perceptual budget")
    body = b"".join(_LENGTH.pack(len(m)) + m for m in members)
    data = bytearray(_HEAD.pack(MAGIC, SET_VERSION, len(members), 0) + body)
    struct.pack_into("<I", data, 8, _crc(data))
    return bytes(data)


def decode_mask_set(data: bytes) -> tuple[Mask, ...]:
    """Parse and verify a mask file: a version 4 set, or any single mask as a set of one."""
    if len(data) < 6 or data[:4] != MAGIC or struct.unpack_from("<H", data, 4)[0] != SET_VERSION:
        return (decode_mask(data),)
    if len(data) < _HEAD.size:
        raise MaskFormatError("mask set is truncated")
    _, _, count, crc = _HEAD.unpack_from(data)
    if not 2 <= count <= MAX_MEMBERS:
        raise MaskFormatError(f"mask set claims {count} members (2..{MAX_MEMBERS} allowed)")
    if _crc(data) != crc:
        raise MaskFormatError("mask set is corrupted (checksum mismatch)")
    masks, at = [], _HEAD.size
    for index in range(count):
        if at + _LENGTH.size > len(data):
            raise MaskFormatError(f"mask set is truncated at member {index + 1} of {count}")
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if length > len(data) - at:
            raise MaskFormatError(f"mask set is truncated at member {index + 1} of {count}")
        try:  # a nested set is refused here: decode_mask reads single masks only
            masks.append(decode_mask(bytes(data[at : at + length])))
        except MaskFormatError as exc:
            raise MaskFormatError(f"mask set member {index + 1} of {count}: {exc}") from None
        at += length
    if at != len(data):
        raise MaskFormatError("mask set has bytes after its last member")
    if not _one_enrollment(masks):
        raise MaskFormatError("mask set members disagree on frame, model set or perceptual budget")
    return tuple(masks)


def read_mask_set(path: str | Path) -> tuple[Mask, ...]:
    """Read and decode a mask or mask-set file, never reading more than the largest valid set."""
    with open(path, "rb") as file:
        data = file.read(MAX_SET_READ_BYTES + 1)
    if len(data) > MAX_SET_READ_BYTES:
        raise MaskFormatError(f"not a FaceCloak mask: larger than the largest valid mask set ({MAX_SET_READ_BYTES} bytes)")
    return decode_mask_set(data)


def member_for_photo(photo: np.ndarray, count: int, member: int | None = None) -> int:
    """Which of ``count`` members cloaks ``photo``: ``member`` if pinned, else SHA-256 of its pixels mod count."""
    if member is not None:
        if not 0 <= member < count:
            raise BadOptionError(f"member must be in 0..{count - 1} for this set of {count}, got {member}")
        return member
    digest = hashlib.sha256(np.ascontiguousarray(photo).tobytes()).digest()
    return int.from_bytes(digest[:8], "little") % count

"""Errors users can act on. Each carries a stable machine-readable ``reason`` and a CLI exit code."""

from __future__ import annotations


class FaceCloakError(Exception):
    """Base class for expected failures: the message is shown to the user as one line."""

    reason = "INTERNAL"
    exit_code = 1


class ImageDecodeError(FaceCloakError):
    """The bytes are not an image we can decode (empty, truncated, wrong type)."""

    reason = "UNDECODABLE_IMAGE"
    exit_code = 3


class ImageTooLargeError(FaceCloakError):
    """The image exceeds the byte or pixel limits (decompression-bomb guard)."""

    reason = "IMAGE_TOO_LARGE"
    exit_code = 4


class NoFaceError(FaceCloakError):
    """No face was detected, or the only faces are too small to protect."""

    reason = "NO_FACE"
    exit_code = 5


class FaceTooSmallError(NoFaceError):
    reason = "FACE_TOO_SMALL"
    exit_code = 6


class MaskFormatError(FaceCloakError):
    """A mask file is corrupted, truncated, or from an unsupported version."""

    reason = "BAD_MASK"
    exit_code = 7


class BadOptionError(FaceCloakError):
    """A configuration value is out of range or unknown."""

    reason = "BAD_OPTION"
    exit_code = 2


class AssetMissingError(FaceCloakError):
    """A model or data asset the operation needs is not on this machine."""

    reason = "ASSET_MISSING"
    exit_code = 8


class OutputError(FaceCloakError):
    """An output file cannot be written: missing or read-only folder, a directory in the way, disk full, size limit."""

    reason = "OUTPUT_FAILED"
    exit_code = 12


class ExtraMissingError(FaceCloakError):
    """An optional dependency this operation needs is not installed; the message names the extra."""

    reason = "EXTRA_MISSING"
    exit_code = 13

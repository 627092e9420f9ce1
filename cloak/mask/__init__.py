"""Stage 3: the compact identity-mask file."""

from .format import Mask, decode_mask, encode_mask, read_mask

__all__ = ["Mask", "decode_mask", "encode_mask", "read_mask"]

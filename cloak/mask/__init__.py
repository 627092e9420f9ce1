"""Stage 3: the compact identity-mask file, and sets of masks for unlinkable photos."""

from .format import Mask, decode_mask, encode_mask, read_mask
from .maskset import decode_mask_set, encode_mask_set, member_for_photo, read_mask_set

__all__ = ["Mask", "decode_mask", "decode_mask_set", "encode_mask", "encode_mask_set", "member_for_photo", "read_mask",
           "read_mask_set"]

"""Stage 4: warp the mask into a photo, add, clip; measure quality."""

from .quality import Quality, face_region, flip_error_map, measure_quality
from .warp import add_and_clip, apply_mask, apply_mask_with_landmarks, face_roi, warp_mask_to_photo

__all__ = ["Quality", "add_and_clip", "apply_mask", "apply_mask_with_landmarks", "face_region", "face_roi", "flip_error_map",
           "measure_quality", "warp_mask_to_photo"]

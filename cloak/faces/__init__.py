"""Face detection (5 landmarks) and similarity alignment to the ArcFace template."""

from .align import AlignedFrame, estimate_similarity, warp_to_frame
from .crop import AlignedFace, align_largest_face, to_chw_float
from .detect import Face, FaceDetector, detect_largest_face

__all__ = ["AlignedFace", "align_largest_face", "to_chw_float", "AlignedFrame", "Face", "FaceDetector", "detect_largest_face", "estimate_similarity", "warp_to_frame"]

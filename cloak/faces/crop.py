"""Photo -> aligned face crop in one call (detect the largest face, fit, warp)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import AlignedFrame, estimate_similarity, warp_to_frame
from .detect import Face, FaceDetector, detect_largest_face


@dataclass(frozen=True)
class AlignedFace:
    face: Face
    matrix: np.ndarray  # 2x3, photo -> frame
    crop: np.ndarray  # (S, S, 3) uint8 RGB

    @property
    def frame_landmarks(self) -> np.ndarray:
        """The face's 5 landmarks in the aligned frame (where the budget's stickers are placed)."""
        return np.hstack([self.face.landmarks, np.ones((5, 1))]) @ self.matrix.T


def align_largest_face(detector: FaceDetector, rgb: np.ndarray, frame: AlignedFrame) -> AlignedFace:
    """Detect the largest face in ``rgb`` and return its aligned crop (NoFaceError if none)."""
    face = detect_largest_face(detector, rgb)
    matrix = estimate_similarity(face.landmarks, frame.points())
    return AlignedFace(face=face, matrix=matrix, crop=warp_to_frame(rgb, matrix, frame))


def to_chw_float(crops: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) or (S, S, 3) uint8 -> float32 (B, 3, S, S) in [0, 1]."""
    batch = crops[None] if crops.ndim == 3 else crops
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0

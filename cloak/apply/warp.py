"""Stage 4: add a mask to any photo of the user at full resolution."""

from __future__ import annotations

import cv2
import numpy as np

from ..faces import FaceDetector, detect_largest_face, estimate_similarity, to_chw_float
from ..faces.align import invert_similarity, warp_to_frame
from ..mask import Mask
from ..optimise.perceptual import allowed_amplitude, clip_to_allowed


def face_roi(matrix: np.ndarray, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) in the photo of the aligned frame's square, clipped; None if outside."""
    inverse = invert_similarity(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inverse.T
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    return None if x0 >= x1 or y0 >= y1 else (x0, y0, x1, y1)


def delta_for_photo(mask: Mask, photo: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(S, S, 3) delta this photo receives: the stored delta, clipped to the mask's perceptual budget
    computed from the photo's own face in the mask's frame (``matrix`` maps photo -> frame)."""
    if mask.perceptual is None:
        return mask.delta
    face = to_chw_float(warp_to_frame(photo, matrix, mask.frame))
    allowed = allowed_amplitude(face, mask.perceptual)[0, 0, :, :, None]
    return clip_to_allowed(mask.delta, allowed)


def warp_mask_to_photo(mask: Mask, landmarks: np.ndarray, photo: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The mask warped into photo space over the face's bounding box only (cost independent of photo size)."""
    matrix = estimate_similarity(landmarks, mask.frame.points())
    roi = face_roi(matrix, mask.frame.size, photo.shape[:2])
    if roi is None:
        return None
    x0, y0, x1, y1 = roi
    # Map ROI pixel centres straight into frame coordinates: frame = M @ (roi + offset).
    to_frame = matrix.copy()
    to_frame[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    warped = cv2.warpAffine(
        delta_for_photo(mask, photo, matrix), to_frame, (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    return warped, roi


_STRIP_VALUES = 1 << 20  # rows of about this many values at a time: a 36 Mpx photo's face costs MBs of temporaries


def add_and_clip(photo: np.ndarray, delta: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    """photo (uint8) + delta (0..1 scale) on ``roi``, clipped to the valid range; returns a new array."""
    x0, y0, x1, y1 = roi
    out = photo.copy()
    rows = max(1, _STRIP_VALUES // max(1, delta[0].size))
    for top in range(0, y1 - y0, rows):
        bottom = min(top + rows, y1 - y0)
        strip = out[y0 + top : y0 + bottom, x0:x1]
        region = strip.astype(np.float32)
        region += delta[top:bottom] * 255.0
        strip[...] = np.clip(np.round(region, out=region), 0, 255, out=region)
    return out


def apply_mask_with_landmarks(photo: np.ndarray, mask: Mask, landmarks: np.ndarray) -> np.ndarray:
    """Cloak ``photo`` given the face's 5 landmarks (image-left first)."""
    warped = warp_mask_to_photo(mask, landmarks, photo)
    return photo.copy() if warped is None else add_and_clip(photo, *warped)


def apply_mask(photo: np.ndarray, mask: Mask, detector: FaceDetector) -> np.ndarray:
    """Detect the user's (largest) face and cloak the photo at its full resolution."""
    return apply_mask_with_landmarks(photo, mask, detect_largest_face(detector, photo).landmarks)

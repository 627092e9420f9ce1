"""Similarity alignment between photo coordinates and the canonical aligned-face frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The 5-point ArcFace template at 112x112, image-left first: eye, eye, nose tip, mouth corner, mouth corner.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class AlignedFrame:
    """A square aligned-face frame: the ArcFace template resized to ``size`` px and zoomed out by ``scale``.

    ``scale`` > 1 leaves more context around the face (the template points move towards the centre).
    """

    size: int = 112
    scale: float = 1.0
    template: str = "arcface5"

    def points(self) -> np.ndarray:
        centre = 56.0
        pts = (ARCFACE_112 - centre) / self.scale + centre
        return pts * (self.size / 112.0)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst (Umeyama).

    Returns a 2x3 float64 matrix. Raises ValueError for degenerate point sets.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinity")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    if var_s < 1e-9:
        raise ValueError("landmarks are degenerate (all points coincide)")
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


def invert_similarity(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 similarity/affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def warp_to_frame(image: np.ndarray, matrix: np.ndarray, frame: AlignedFrame) -> np.ndarray:
    """Crop the aligned face: warp ``image`` (H, W, C) with ``matrix`` (photo -> frame) to frame.size^2."""
    return cv2.warpAffine(
        image, matrix, (frame.size, frame.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )

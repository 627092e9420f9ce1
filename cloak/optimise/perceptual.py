"""The perceptual budget (issue 13): how much cloak a pixel may carry comes from the photo it lands on.

A fixed per-pixel budget learned on the enrollment photo lands on other content in every other photo
(its textured pixels become flat skin or background there). Here the mask only carries the delta;
the amplitude allowed at each aligned-frame pixel is computed from the photo being cloaked, in the
same frame, by one rule used everywhere (each PGD view, the self-check, `facecloak apply`, the server):

    allowed = eps * support * (floor + (1 - floor) * min(1, local_contrast / contrast))

``local_contrast`` is the standard deviation of luma (BT.601) in a small window: noise hides in
texture (contrast masking) and shows on flat skin. ``support`` is a soft ellipse fitted to the
frame's five landmarks (zero on background beside the face, where pose changes move it) and it is
photo-independent, so it is folded into the stored delta's bound instead of being recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import BadOptionError

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, as cv2's RGB2GRAY
WINDOW_AT_112 = 5  # px of the local-contrast window in a 112 px frame (scaled with the frame, kept odd)


@dataclass(frozen=True)
class PerceptualBudget:
    """Apply-time budget parameters; a mask file carries them so every applier computes the same bound."""

    eps: float = 32 / 255  # largest amplitude, on fully textured face pixels (0..1 scale)
    floor: float = 0.25  # share of eps allowed on perfectly flat pixels
    contrast: float = 0.06  # local luma std (0..1 scale) from which a pixel counts as fully textured

    def validate(self) -> None:
        if not 0 < self.eps <= 64 / 255:
            raise BadOptionError(f"perceptual eps must be in (0, 64/255], got {self.eps * 255:g}/255")
        if not 0 <= self.floor <= 1:
            raise BadOptionError(f"perceptual floor must be in [0, 1], got {self.floor:g}")
        if not 0 < self.contrast <= 1:
            raise BadOptionError(f"perceptual contrast must be in (0, 1], got {self.contrast:g}")


def window_size(size: int) -> int:
    """The local-contrast window for an S px frame: 5 px at 112, proportional, odd, at least 3."""
    return max(3, int(round(WINDOW_AT_112 * size / 112)) | 1)


def local_contrast(luma: np.ndarray) -> np.ndarray:
    """(S, S) float32 luma in [0, 1] -> its standard deviation in a ``window_size`` box (reflected border)."""
    k = (window_size(luma.shape[-1]),) * 2
    mean = cv2.blur(luma, k, borderType=cv2.BORDER_REFLECT_101)
    square = cv2.blur(luma * luma, k, borderType=cv2.BORDER_REFLECT_101)
    return np.sqrt(np.maximum(square - mean * mean, 0.0))


def allowed_amplitude(frames: np.ndarray, cfg: PerceptualBudget) -> np.ndarray:
    """(N, 3, S, S) aligned faces in [0, 1] -> (N, 1, S, S) float32: the amplitude each pixel may carry.

    The face support is not in here: it is photo-independent and already bounds the stored delta.
    """
    frames = np.asarray(frames, np.float32)
    luma = np.einsum("c,nchw->nhw", LUMA, frames)
    texture = np.stack([np.minimum(local_contrast(np.ascontiguousarray(y)) / cfg.contrast, 1.0) for y in luma])
    return (cfg.eps * (cfg.floor + (1.0 - cfg.floor) * texture))[:, None].astype(np.float32)


def face_support(landmarks: np.ndarray, size: int, soft: float = 0.15) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 on the face, 0 beside it, ramping over the outer ``soft`` of an ellipse.

    The ellipse comes from the five frame landmarks (eyes, nose, mouth corners): centred between eye
    and mouth lines, 1.1 eye distances to each side, reaching ~0.95 eye distances above the eyes
    (forehead) and ~0.75 below the mouth (chin).
    """
    eyes, mouth = landmarks[:2], landmarks[3:5]
    eye_dist = float(np.linalg.norm(eyes[1] - eyes[0]))
    top, bottom = eyes[:, 1].mean() - 0.95 * eye_dist, mouth[:, 1].mean() + 0.75 * eye_dist
    cx, cy = landmarks[:, 0].mean(), (top + bottom) / 2
    ax, ay = 1.1 * eye_dist, (bottom - top) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    radius = np.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2)
    return np.clip((1.0 - radius) / soft, 0.0, 1.0).astype(np.float32)


def clip_to_allowed(delta: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``delta`` clipped per pixel to [-allowed, allowed], float32; ``allowed`` broadcasts over the channel
    axis ((..., 3, S, S) with (..., 1, S, S), or (S, S, 3) with (S, S, 1))."""
    return np.clip(delta, -allowed, allowed).astype(np.float32)

"""Per-pixel perturbation budgets: eps everywhere, eps_A on region stickers and high-frequency texture."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class BudgetConfig:
    eps: float = 8 / 255
    eps_focus: float = 32 / 255  # eps_A
    stickers: bool = True
    highpass: bool = True
    highpass_sigma: float = 2.0  # px at 112; scales with the frame
    highpass_mu: float = 1.0  # threshold on the standardised high-pass response
    border_taper_px: float = 4.0  # px at 112: fade the budget to 0 at the crop edge (no visible seam)


# Sticker boxes at 112 px (w, h), centred on the landmarks: eyes, nose; mouth spans both corners.
_EYE_BOX = (22.0, 10.0)
_NOSE_BOX = (22.0, 28.0)
_MOUTH_HEIGHT = 28.0
_MOUTH_MARGIN = 4.0


def _fill_box(mask: np.ndarray, cx: float, cy: float, w: float, h: float) -> None:
    side = mask.shape[0]
    x0, x1 = int(round(max(0, cx - w / 2))), int(round(min(side, cx + w / 2)))
    y0, y1 = int(round(max(0, cy - h / 2))), int(round(min(side, cy + h / 2)))
    mask[y0:y1, x0:x1] = True


def sticker_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Boolean (S, S): boxes around both eyes, the nose and the mouth, from 5 frame landmarks."""
    k = size / 112.0
    mask = np.zeros((size, size), dtype=bool)
    for eye in landmarks[:2]:
        _fill_box(mask, eye[0], eye[1], _EYE_BOX[0] * k, _EYE_BOX[1] * k)
    # The nose box sits between the eyes and the tip, where the bridge carries identity.
    _fill_box(mask, landmarks[2, 0], landmarks[2, 1] - 6 * k, _NOSE_BOX[0] * k, _NOSE_BOX[1] * k)
    left, right = landmarks[3], landmarks[4]
    width = abs(right[0] - left[0]) + 2 * _MOUTH_MARGIN * k
    _fill_box(mask, (left[0] + right[0]) / 2, (left[1] + right[1]) / 2, width, _MOUTH_HEIGHT * k)
    return mask


def highpass_mask(face: np.ndarray, sigma: float, mu: float) -> np.ndarray:
    """Boolean (S, S): |I - G_sigma * I| / std > mu on luminance (textured pixels hide noise best).

    We threshold the magnitude: dark and bright edges are equally textured.
    """
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    response = grey - cv2.GaussianBlur(grey, (0, 0), sigma)
    return np.abs(response / max(float(response.std()), 1e-6)) > mu


def border_taper(size: int, width: float) -> np.ndarray:
    """(S, S) float in [0, 1]: 0 at the crop edge rising linearly to 1 over ``width`` px."""
    if width <= 0:
        return np.ones((size, size), dtype=np.float32)
    ramp = np.clip((np.arange(size, dtype=np.float32) + 0.5) / width, 0, 1)
    ramp = np.minimum(ramp, ramp[::-1])
    return np.minimum.outer(ramp, ramp)


def budget_map(face: np.ndarray, landmarks: np.ndarray, cfg: BudgetConfig) -> np.ndarray:
    """(S, S) float32 per-pixel L-inf budget on the 0..1 scale for an aligned RGB uint8 face."""
    size = face.shape[0]
    k = size / 112.0
    focus = np.zeros((size, size), dtype=bool)
    if cfg.stickers:
        focus |= sticker_mask(landmarks, size)
    if cfg.highpass:
        focus |= highpass_mask(face, cfg.highpass_sigma * k, cfg.highpass_mu)
    budget = np.where(focus, cfg.eps_focus, cfg.eps).astype(np.float32)
    return budget * border_taper(size, cfg.border_taper_px * k)


@dataclass(frozen=True)
class Budget:
    """The per-pixel L-inf budget and the base eps it was made from: the one value that carries
    ``--eps`` from the command line to the projection (the step size scales with map / eps)."""

    map: np.ndarray  # (S, S) float32 on the 0..1 scale
    eps: float
    # (N, 1, S, S) amplitude each optimised view allows (the perceptual budget computed from that
    # view, optimise.perceptual); None: every view takes the whole map.
    per_view: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.map.ndim != 2 or self.map.shape[0] != self.map.shape[1]:
            raise ValueError(f"budget map must be (S, S), got {self.map.shape}")
        if not self.eps > 0:
            raise ValueError(f"base eps must be positive, got {self.eps}")
        if self.per_view is not None and (self.per_view.ndim != 4 or self.per_view.shape[1:] != (1, *self.map.shape)):
            raise ValueError(f"per-view bounds must be (N, 1, S, S), got {self.per_view.shape}")

    @classmethod
    def of_face(cls, face: np.ndarray, landmarks: np.ndarray, cfg: BudgetConfig) -> Budget:
        return cls(budget_map(face, landmarks, cfg), cfg.eps)

    def view_bound(self, n: int) -> np.ndarray:
        """(N, 1, S, S) float32: what each view allows (the map's peak where views add no bound of their own)."""
        if self.per_view is None:
            return np.full((n, 1, *self.map.shape), float(self.map.max(initial=0.0)), np.float32)
        if len(self.per_view) != n:
            raise ValueError(f"budget has per-view bounds for {len(self.per_view)} views, not {n}")
        return np.ascontiguousarray(self.per_view, np.float32)

    def bound(self) -> np.ndarray:
        """(3, S, S) float32: the map for every channel."""
        return np.ascontiguousarray(np.broadcast_to(self.map.astype(np.float32), (3, *self.map.shape)))

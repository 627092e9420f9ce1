"""Reference host code around the on-device op: mask loading, ROI planning, tiling, bad-input checks.

This is what the Swift and Kotlin snippets do, in Python, and what the tests run against the server's
apply. The phone crops the face ROI itself and calls the op on the crop only, so the cost follows
the face, not the frame (docs/ondevice.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..apply import face_roi
from ..errors import FaceCloakError, MaskFormatError
from ..faces import estimate_similarity
from ..mask import decode_mask

# (roi (1, h, w, 3), mask (S, S, 3) float32 0..255, matrix (2, 3) float32) -> cloaked roi, same shape.
Runner = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
MIN_LANDMARK_SPREAD_PX = 1.0


class LandmarkError(FaceCloakError):
    """The 5 landmarks are malformed, non-finite or degenerate."""

    reason = "BAD_LANDMARKS"
    exit_code = 2


@dataclass(frozen=True)
class DeviceMask:
    """A decoded mask in the op's input layout plus the template points of its aligned frame."""

    values: np.ndarray  # (S, S, 3) float32, delta on the 0..255 scale
    points: np.ndarray  # (5, 2) float64, template landmarks in mask pixels

    @property
    def size(self) -> int:
        return self.values.shape[0]


@dataclass(frozen=True)
class RoiPlan:
    """Where the op runs in the frame and how ROI pixels map to mask pixels."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), clipped to the frame
    matrix: np.ndarray  # (2, 3) float32: ROI pixel (x, y) -> mask pixel


def load_device_mask(data: bytes, expected_size: int) -> DeviceMask:
    """Decode a .fcmask (any defect -> MaskFormatError) and check it fits the exported op."""
    mask = decode_mask(data)
    if mask.frame.size != expected_size:
        raise MaskFormatError(f"mask is {mask.frame.size} px but the on-device op was exported for {expected_size} px masks")
    return DeviceMask(values=(mask.delta * np.float32(255.0)).astype(np.float32), points=mask.frame.points())


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) finite, non-degenerate landmarks as float64, or LandmarkError saying what is wrong."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise LandmarkError(f"need 5 (x, y) landmarks, got an array of shape {points.shape}")
    if not np.isfinite(points).all():
        raise LandmarkError("landmarks contain NaN or infinity")
    if np.ptp(points, axis=0).max() < MIN_LANDMARK_SPREAD_PX:
        raise LandmarkError("landmarks are degenerate (all points coincide)")
    return points


def similarity_closed_form(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst without an SVD: the formula the Swift/Kotlin snippets use.

    With centred points, a = sum(s.d)/sum(|s|^2) and b = sum(s x d)/sum(|s|^2) give the rotation-scale
    [[a, -b], [b, a]]; it equals Umeyama (estimate_similarity) for 2-D similarities.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    norm = (s**2).sum()
    a = (s * d).sum() / norm
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def plan_roi(mask: DeviceMask, landmarks: np.ndarray, frame_shape: tuple[int, int]) -> RoiPlan | None:
    """The ROI and ROI->mask matrix for one face; None when the mask square lies wholly outside the frame.

    A face partly outside the frame gets a clipped ROI (the matrix keeps the true geometry).
    """
    points = check_landmarks(landmarks)
    to_mask = estimate_similarity(points, mask.points)
    box = face_roi(to_mask, mask.size, frame_shape)
    if box is None:
        return None
    matrix = to_mask.copy()
    matrix[:, 2] += to_mask[:, :2] @ np.array(box[:2], dtype=np.float64)
    return RoiPlan(box=box, matrix=matrix.astype(np.float32))


def run_tiled(runner: Runner, roi: np.ndarray, mask: np.ndarray, matrix: np.ndarray, tile: int) -> np.ndarray:
    """Run a fixed-size (tile x tile) model over an ROI of any size; edge tiles are zero-padded."""
    _, h, w, _ = roi.shape
    out = np.empty_like(roi)
    padded = np.zeros((1, tile, tile, 3), dtype=roi.dtype)
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            th, tw = min(tile, h - ty), min(tile, w - tx)
            padded[:] = 0
            padded[0, :th, :tw] = roi[0, ty:ty + th, tx:tx + tw]
            shifted = matrix.astype(np.float64)
            shifted[:, 2] += shifted[:, :2] @ np.array([tx, ty], dtype=np.float64)
            result = runner(padded, mask, shifted.astype(np.float32))
            out[0, ty:ty + th, tx:tx + tw] = result[0, :th, :tw]
    return out


def cloak_in_place(frame: np.ndarray, mask: DeviceMask, landmarks: np.ndarray, runner: Runner,
                   tile: int | None = None) -> bool:
    """Cloak one face of an RGB uint8 frame in place (only the ROI is touched); False if it is off-frame."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    plan = plan_roi(mask, landmarks, frame.shape[:2])
    if plan is None:
        return False
    x0, y0, x1, y1 = plan.box
    roi = np.ascontiguousarray(frame[None, y0:y1, x0:x1])
    cloaked = runner(roi, mask.values, plan.matrix) if tile is None else run_tiled(runner, roi, mask.values, plan.matrix, tile)
    frame[y0:y1, x0:x1] = cloaked[0]
    return True


def cloak_frame(frame: np.ndarray, mask: DeviceMask, landmarks: np.ndarray, runner: Runner,
                tile: int | None = None) -> tuple[np.ndarray, bool]:
    """A cloaked copy of ``frame`` and whether the mask was applied (see cloak_in_place)."""
    out = frame.copy()
    return out, cloak_in_place(out, mask, landmarks, runner, tile)

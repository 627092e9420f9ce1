"""Reference host code around the on-device op: mask loading, ROI planning, tiling, bad-input checks.

This is what the Swift and Kotlin snippets do, in Python, and what the tests run against the server's
apply. The phone crops the face ROI itself and calls the op on the crop only, so the cost follows
the face, not the frame (docs/ondevice.md). A fused model (ONNX, Core ML) is one call per face; the
fixed-tile TFLite model is three signatures the host drives (:class:`TileStages`, :func:`run_tiled`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..apply import face_roi
from ..errors import FaceCloakError, MaskFormatError
from ..faces import estimate_similarity
from ..mask import Mask, decode_mask

# The fused op: (roi (1, h, w, 3), mask (S, S, 3) float32 0..255, matrix (2, 3) float32,
# budget (3,) float32) -> cloaked roi, same shape (ondevice_op.CloakOp).
Runner = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# Budget input of masks without a perceptual budget: allowed amplitude 255 everywhere, a no-op clip.
NO_BUDGET = np.array([255.0, 1.0, 1.0], np.float32)
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
    budget: np.ndarray = field(default_factory=NO_BUDGET.copy)  # (3,) float32: eps on the 0..255 scale, floor, contrast (format 3)

    @property
    def size(self) -> int:
        return self.values.shape[0]


@dataclass(frozen=True)
class TileStages:
    """The three fixed-tile signatures of the TFLite model (ondevice_op.FrameSample, BudgetClip, AddAndClip).

    A tile never sees the whole face, so the frame the budget needs is sampled per tile and summed
    here before the budget runs once; the tiles then add the clipped mask as before.
    """

    sample: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (tile, matrix, window) -> (3, S, S)
    budget: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (frame, mask, budget) -> (S, S, 3)
    add: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (tile, clipped mask, matrix) -> tile
    tile: int


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
    return DeviceMask(values=(mask.delta * np.float32(255.0)).astype(np.float32), points=mask.frame.points(),
                      budget=budget_input(mask))


def budget_input(mask: Mask) -> np.ndarray:
    """The op's ``budget`` input for a decoded mask: (eps * 255, floor, contrast), or NO_BUDGET."""
    p = mask.perceptual
    return NO_BUDGET.copy() if p is None else np.array([p.eps * 255.0, p.floor, p.contrast], np.float32)


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


def _tiles(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            yield tx, ty, min(tile, width - tx), min(tile, height - ty)


def run_tiled(stages: TileStages, roi: np.ndarray, mask: np.ndarray, matrix: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Run the fixed-size (tile x tile) stages over an ROI of any size; edge tiles are zero-padded.

    Pass 1 sums every tile's share of the frame sample (each bilinear tap lies in exactly one tile;
    taps clamp to the whole ROI, given by the window), the budget clips the mask once, pass 2 adds it
    per tile. Pass 1 costs O(S^2) per tile, i.e. about S^2 / tile^2 frame samples per ROI pixel.
    """
    _, h, w, _ = roi.shape
    tile = stages.tile
    padded = np.zeros((1, tile, tile, 3), dtype=roi.dtype)

    def load(tx: int, ty: int, tw: int, th: int) -> np.ndarray:
        padded[:] = 0
        padded[0, :th, :tw] = roi[0, ty:ty + th, tx:tx + tw]
        return padded

    frame = np.zeros((3, mask.shape[0], mask.shape[1]), np.float32)
    for tx, ty, tw, th in _tiles(h, w, tile):
        window = np.array([tx, ty, w, h], np.float32)
        frame += stages.sample(load(tx, ty, tw, th), matrix, window)
    clipped = stages.budget(frame, mask, budget)
    out = np.empty_like(roi)
    for tx, ty, tw, th in _tiles(h, w, tile):
        shifted = matrix.astype(np.float64)
        shifted[:, 2] += shifted[:, :2] @ np.array([tx, ty], dtype=np.float64)
        result = stages.add(load(tx, ty, tw, th), clipped, shifted.astype(np.float32))
        out[0, ty:ty + th, tx:tx + tw] = result[0, :th, :tw]
    return out


def cloak_in_place(frame: np.ndarray, mask: DeviceMask, landmarks: np.ndarray, runner: Runner | TileStages) -> bool:
    """Cloak one face of an RGB uint8 frame in place (only the ROI is touched); False if it is off-frame."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    plan = plan_roi(mask, landmarks, frame.shape[:2])
    if plan is None:
        return False
    x0, y0, x1, y1 = plan.box
    roi = np.ascontiguousarray(frame[None, y0:y1, x0:x1])
    if isinstance(runner, TileStages):
        cloaked = run_tiled(runner, roi, mask.values, plan.matrix, mask.budget)
    else:
        cloaked = runner(roi, mask.values, plan.matrix, mask.budget)
    frame[y0:y1, x0:x1] = cloaked[0]
    return True


def cloak_frame(frame: np.ndarray, mask: DeviceMask, landmarks: np.ndarray,
                runner: Runner | TileStages) -> tuple[np.ndarray, bool]:
    """A cloaked copy of ``frame`` and whether the mask was applied (see cloak_in_place)."""
    out = frame.copy()
    return out, cloak_in_place(out, mask, landmarks, runner)

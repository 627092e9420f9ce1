"""CPU default for stage 1: identity-preserving augmentation of the single enrollment photo.

Each view re-aligns the photo with jittered landmarks (the pose and detector noise a phone will
see), then changes lighting, colour, sharpness, compression and adds small occlusions. View 0 is
the clean alignment. Everything is drawn from one seeded generator, so views are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..faces.align import AlignedFrame, estimate_similarity, warp_to_frame
from .base import ViewRequest


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 8.0
    scale_jitter: float = 0.06
    shift_frac: float = 0.03  # of the frame side
    landmark_noise_frac: float = 0.02  # of the inter-ocular distance
    flip_prob: float = 0.25
    brightness: float = 0.08
    contrast: float = 0.15
    gamma: float = 0.2
    colour_gain: float = 0.06
    blur_prob: float = 0.3
    blur_sigma: float = 1.0
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (55, 95)
    occlusion_prob: float = 0.2
    occlusion_frac: float = 0.18


def _jittered_matrix(rng: np.random.Generator, landmarks: np.ndarray, frame: AlignedFrame, cfg: AugmentConfig) -> np.ndarray:
    eye_dist = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    noisy = landmarks + rng.normal(0.0, cfg.landmark_noise_frac * eye_dist, landmarks.shape)
    base = estimate_similarity(noisy, frame.points())
    centre = frame.size / 2.0
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    scale = 1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter)
    extra = cv2.getRotationMatrix2D((centre, centre), angle, scale)
    extra[:, 2] += rng.uniform(-cfg.shift_frac, cfg.shift_frac, 2) * frame.size
    return np.vstack([extra, [0, 0, 1]])[:2] @ np.vstack([base, [0, 0, 1]])


def _photometric(rng: np.random.Generator, face: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    img = face.astype(np.float32) / 255.0
    img = img ** np.exp(rng.uniform(-cfg.gamma, cfg.gamma))
    img = (img - 0.5) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + 0.5
    img = img + rng.uniform(-cfg.brightness, cfg.brightness)
    img = img * (1.0 + rng.uniform(-cfg.colour_gain, cfg.colour_gain, 3)).astype(np.float32)
    img = np.clip(img, 0.0, 1.0)
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, cfg.blur_sigma))
    if rng.random() < cfg.occlusion_prob:
        side = img.shape[0]
        h, w = (rng.uniform(0.5, 1.0, 2) * cfg.occlusion_frac * side).astype(int) + 1
        y, x = rng.integers(0, side - h), rng.integers(0, side - w)
        img[y : y + h, x : x + w] = rng.uniform(0.0, 1.0, 3)
    out = np.round(img * 255.0).astype(np.uint8)
    if rng.random() < cfg.jpeg_prob:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


class AugmentViews:
    """Stage-1 views by augmentation (no generative model; runs anywhere)."""

    name = "augment"

    def __init__(self, config: AugmentConfig = AugmentConfig()) -> None:
        self.config = config

    def generate(self, request: ViewRequest) -> np.ndarray:
        rng = np.random.default_rng(request.seed)
        frame, lms = request.frame, request.face.landmarks
        views = [warp_to_frame(request.photo, estimate_similarity(lms, frame.points()), frame)]
        while len(views) < request.count:
            matrix = _jittered_matrix(rng, lms, frame, self.config)
            aligned = warp_to_frame(request.photo, matrix, frame)
            if rng.random() < self.config.flip_prob:
                aligned = np.ascontiguousarray(aligned[:, ::-1])
            views.append(_photometric(rng, aligned, self.config))
        stack = np.stack(views[: request.count]).astype(np.float32) / 255.0
        return np.ascontiguousarray(stack.transpose(0, 3, 1, 2))

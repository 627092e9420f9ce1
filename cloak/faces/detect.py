"""YuNet face detection with 5 landmarks (OpenCV's FaceDetectorYN)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..assets import asset
from ..errors import FaceTooSmallError, NoFaceError

# OpenCV's DNN engine warns about unsupported targets on every net; keep user-facing output clean.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@dataclass(frozen=True)
class Face:
    """One detected face in photo coordinates. Landmarks are image-left first (template order)."""

    box: tuple[float, float, float, float]  # x, y, w, h
    landmarks: np.ndarray  # (5, 2): eye, eye, nose, mouth corner, mouth corner
    score: float

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


@dataclass(frozen=True)
class DetectorConfig:
    model: str = "models/yunet_n_dynamic.onnx"
    score_threshold: float = 0.7
    nms_threshold: float = 0.3
    max_side: int = 1280  # detection runs on a downscaled copy; the photo itself is never resized
    min_face_px: int = 32


class FaceDetector:
    """Thread-safe wrapper over cv2.FaceDetectorYN (one OpenCV instance per thread)."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), model_path: Path | None = None) -> None:
        self.config = config
        self.model_path = str(model_path or asset(config.model))
        self._local = threading.local()

    def _net(self) -> cv2.FaceDetectorYN:
        net = getattr(self._local, "net", None)
        if net is None:
            cfg = self.config
            net = cv2.FaceDetectorYN.create(self.model_path, "", (320, 320), cfg.score_threshold, cfg.nms_threshold, 50)
            self._local.net = net
        return net

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 photo, largest first."""
        h, w = rgb.shape[:2]
        factor = min(1.0, self.config.max_side / max(h, w))
        # At least 1 px per side: a 5000x1 strip would otherwise be resized to height 0 (an OpenCV error).
        small_size = (max(1, round(w * factor)), max(1, round(h * factor)))
        small = rgb if factor == 1.0 else cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(small[..., ::-1])
        net = self._net()
        net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = net.detect(bgr)
        if rows is None:
            return []
        faces = []
        for row in rows:
            sx = w / bgr.shape[1]
            sy = h / bgr.shape[0]
            box = (row[0] * sx, row[1] * sy, row[2] * sx, row[3] * sy)
            lms = row[4:14].reshape(5, 2).astype(np.float64) * np.array([sx, sy])
            faces.append(Face(box=tuple(float(v) for v in box), landmarks=lms, score=float(row[14])))
        return sorted(faces, key=lambda f: f.area, reverse=True)


def detect_largest_face(detector: FaceDetector, rgb: np.ndarray) -> Face:
    """The largest face; NoFaceError if there is none, FaceTooSmallError if it is below min_face_px."""
    faces = detector.detect(rgb)
    if not faces:
        raise NoFaceError("no face found in the photo")
    face = faces[0]
    if min(face.box[2], face.box[3]) < detector.config.min_face_px:
        raise FaceTooSmallError(
            f"the face is too small ({face.box[2]:.0f}x{face.box[3]:.0f} px; need at least "
            f"{detector.config.min_face_px} px)"
        )
    return face

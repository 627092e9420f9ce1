"""Screening generated views like real photos: detect, align, check the identity; replace failures.

A generated image is kept only if the shared YuNet detector finds a face in it (aligned with
``align_largest_face`` to the request's frame, exactly like an uploaded photo) and its identity
embedding stays close to the source (cosine >= ``min_identity_cosine``). Rejected candidates are
replaced by new seeds up to a bounded number of candidates; then a clear error says why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import FaceCloakError, NoFaceError
from ..faces import AlignedFrame, FaceDetector, align_largest_face, to_chw_float
from .arc2face_identity import IdentityEncoder


class ViewGenerationError(FaceCloakError):
    """The generator could not produce enough usable views (no face found, or identity drifted)."""

    reason = "VIEWS_FAILED"
    exit_code = 10  # 9 is ENGINE_MISMATCH


@dataclass(frozen=True)
class ScreenConfig:
    # Cosine between the ArcFace embeddings of the view and the source photo. Arc2Face views of
    # one person typically score well above this; below it the face is someone else.
    min_identity_cosine: float = 0.4
    candidates_per_view: float = 3.0  # at most ceil(count * this) images are generated in total


@dataclass(frozen=True)
class Verdict:
    view: np.ndarray | None  # (3, S, S) float32 in [0,1] when accepted
    reason: str  # "ok", "no_face" or "identity_drift"
    cosine: float = math.nan


class ViewScreen:
    """Accept or reject one generated RGB image against the source identity."""

    def __init__(self, detector: FaceDetector, identity: IdentityEncoder, frame: AlignedFrame, config: ScreenConfig) -> None:
        self.detector = detector
        self.identity = identity
        self.frame = frame
        self.config = config

    def __call__(self, image: np.ndarray, source: np.ndarray) -> Verdict:
        try:
            aligned = align_largest_face(self.detector, image, self.frame)
        except NoFaceError:  # includes faces below the detector's minimum size
            return Verdict(None, "no_face")
        cosine = float(self.identity.embed(image, aligned.face.landmarks) @ source)
        if cosine < self.config.min_identity_cosine:
            return Verdict(None, "identity_drift", cosine)
        return Verdict(to_chw_float(aligned.crop)[0], "ok", cosine)


def collect_views(
    propose: Callable[[Sequence[int]], np.ndarray],
    screen: Callable[[np.ndarray, np.ndarray], Verdict],
    source: np.ndarray,
    count: int,
    max_candidates: int,
) -> tuple[np.ndarray, Counter]:
    """Draw candidates 0, 1, 2, ... (``propose(indices)`` -> images) until ``count`` pass the screen.

    Returns the (count, 3, S, S) views in candidate order and the tally of verdicts. Raises
    ViewGenerationError once ``max_candidates`` images were tried without enough passing.
    """
    accepted: list[np.ndarray] = []
    tally: Counter = Counter()
    best = -math.inf
    index = 0
    while len(accepted) < count:
        if index >= max_candidates:
            raise ViewGenerationError(
                f"only {len(accepted)} of {count} synthetic views passed after {index} candidates "
                f"({tally['no_face']} without a detectable face, {tally['identity_drift']} with identity drift"
                + (f"; best identity cosine {best:.3f})" if best > -math.inf else ")")
            )
        batch = list(range(index, min(index + count - len(accepted), max_candidates)))
        for image in propose(batch):
            verdict = screen(image, source)
            tally[verdict.reason] += 1
            if not math.isnan(verdict.cosine):
                best = max(best, verdict.cosine)
            if verdict.view is not None and len(accepted) < count:
                accepted.append(verdict.view)
        index += len(batch)
    return np.stack(accepted).astype(np.float32), tally

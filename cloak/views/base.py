"""The synthetic-view interface (stage 1): one photo in, n aligned views of the same identity out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..faces.align import AlignedFrame
from ..faces.detect import Face


@dataclass(frozen=True)
class ViewRequest:
    """What a view generator is asked for: ``count`` views of the person in ``photo``, aligned to ``frame``."""

    photo: np.ndarray  # RGB uint8 (H, W, 3), full resolution
    face: Face  # the detected face in ``photo``
    frame: AlignedFrame
    count: int
    seed: int


class ViewGenerator(Protocol):
    """Stage-1 backends (CPU augmentation, Arc2Face) share this call."""

    name: str

    def generate(self, request: ViewRequest) -> np.ndarray:
        """Return float32 (count, 3, S, S) RGB views in [0, 1], aligned to ``request.frame``."""
        ...

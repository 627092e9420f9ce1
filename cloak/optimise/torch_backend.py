"""The PyTorch eager backend: the core's own embedders and ``pgd_step``, on the CPU."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..models import numpy_torch_embedder, torch_embedder
from .config import PGDConfig
from .loop import Anchors, Stepper
from .torch_step import TorchStepper, surrogate_targets


class TorchBackend:
    """PyTorch eager autograd on the CPU (or whatever device torch defaults to): the reference."""

    name = "torch"

    def embed(self, model: str, faces: np.ndarray) -> np.ndarray:
        return numpy_torch_embedder(model)(faces)

    def stepper(self, anchors: Mapping[str, Anchors], views: int, size: int, cfg: PGDConfig) -> Stepper:
        return TorchStepper(surrogate_targets({m: torch_embedder(m) for m in anchors}, anchors), cfg)

"""The PyTorch eager backend: the core's own embedders and ``pgd_step``, on the CPU."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..models import torch_embedder
from .config import PGDConfig
from .loop import Anchors, Stepper
from .torch_step import TorchStepper, surrogate_targets


class TorchBackend:
    """PyTorch eager autograd on the CPU (or whatever device torch defaults to): the reference."""

    name = "torch"

    def embed(self, model: str, faces: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch_embedder(model)(torch.from_numpy(np.ascontiguousarray(faces, np.float32))).numpy()

    def stepper(self, anchors: Mapping[str, Anchors], views: int, size: int, cfg: PGDConfig) -> Stepper:
        return TorchStepper(surrogate_targets({m: torch_embedder(m) for m in anchors}, anchors), cfg)

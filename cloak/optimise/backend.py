"""Where stage 2 runs: the two things enrollment needs from a backend, numpy in and numpy out.

Embeddings (anchor search and the self-check) and a ``Stepper`` for the core's PGD loop. A backend
on ONNX Runtime or TensorRT (``facecloak.engines.graph_backend``) serves both from exported graphs,
so enrollment runs without PyTorch at request time; ``torch_backend.TorchBackend`` is the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from .config import PGDConfig
from .loop import Anchors, Stepper


class OptimiseBackend(Protocol):
    name: str

    def embed(self, model: str, faces: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 aligned faces in [0, 1] -> (B, D) unit embeddings."""
        ...

    def stepper(self, anchors: Mapping[str, Anchors], views: int, size: int, cfg: PGDConfig) -> Stepper:
        """The step for this surrogate set (ordered as ``anchors``), number of views and frame size."""
        ...

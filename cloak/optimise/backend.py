"""Where stage 2 runs: one small interface over PyTorch eager and the exported-engine runtimes.

The enrollment pipeline only needs two things from a backend: embeddings (anchor search and the
self-check) and the PGD loop. Both take and return numpy, so a backend built on ONNX Runtime or
TensorRT (``facecloak.engines.backend``) runs enrollment without PyTorch at request time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..models import torch_embedder
from .pgd import PGDConfig, SurrogateTarget, run_pgd

IterationProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class AnchorSet:
    """One surrogate's unit vectors: G+ (near), G- (far) and the user's clean embedding."""

    near: np.ndarray
    far: np.ndarray
    user: np.ndarray


@dataclass(frozen=True)
class OptimiseResult:
    delta: np.ndarray  # (3, S, S) float32, effective perturbation
    losses: list[float]


class OptimiseBackend(Protocol):
    name: str

    def embed(self, model: str, faces: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 aligned faces in [0, 1] -> (B, D) unit embeddings."""
        ...

    def optimise(
        self, views: np.ndarray, budget: np.ndarray, anchors: Mapping[str, AnchorSet], cfg: PGDConfig,
        seed: int, eps: float, progress: IterationProgress | None = None,
    ) -> OptimiseResult:
        """Run the PGD loop over ``views`` (N, 3, S, S) under ``budget`` (S, S)."""
        ...


class TorchBackend:
    """PyTorch eager autograd on the CPU (or whatever device torch defaults to): the reference."""

    name = "torch"

    def embed(self, model: str, faces: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch_embedder(model)(torch.from_numpy(np.ascontiguousarray(faces, np.float32))).numpy()

    def optimise(
        self, views: np.ndarray, budget: np.ndarray, anchors: Mapping[str, AnchorSet], cfg: PGDConfig,
        seed: int, eps: float, progress: IterationProgress | None = None,
    ) -> OptimiseResult:
        targets = [
            SurrogateTarget(torch_embedder(m), *(torch.from_numpy(np.asarray(v, np.float32)) for v in (a.near, a.far, a.user)))
            for m, a in anchors.items()
        ]
        result = run_pgd(torch.from_numpy(np.ascontiguousarray(views, np.float32)), torch.from_numpy(budget), targets,
                         cfg, seed=seed, progress=progress, eps=eps)
        return OptimiseResult(result.delta.numpy().astype(np.float32), result.losses)

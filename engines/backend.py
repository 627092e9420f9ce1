"""The enrollment optimise stage on exported engines: ``facecloak.optimise.backend.OptimiseBackend``
implemented with a runtime from ``engines.runtimes`` (ONNX Runtime or TensorRT; no PyTorch).

A step graph is exported for one surrogate set and one number of views. Requests with another
shape use ``fallback`` (the PyTorch backend in the server) when one is given, else they fail with
ENGINE_MISMATCH naming the export command that would serve them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import EngineMismatchError
from .pgd_loop import LoopResult, PGDSettings, run_pgd_graphs, step_key
from .runtimes import Runtime, RuntimeConfig, open_first_runtime

log = logging.getLogger("facecloak.engines")

# Most capable first: a configured runtime falls back to the ones after it.
RUNTIME_ORDER = ("tensorrt", "ort-cuda", "ort-cpu")


class GraphBackend:
    """Embeddings and the PGD loop on a runtime's exported graphs."""

    def __init__(self, runtime: Runtime, fallback: Any | None = None) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.fallback = fallback
        self._embedders: dict[str, Any] = {}

    def embed(self, model: str, faces: np.ndarray) -> np.ndarray:
        if model not in self._embedders:
            self._embedders[model] = self.runtime.embedder(model)
        return self._embedders[model](np.ascontiguousarray(faces, np.float32))

    def optimise(self, views: np.ndarray, budget: np.ndarray, anchors: Mapping[str, Any], cfg: PGDSettings,
                 seed: int, eps: float, progress: Any = None) -> LoopResult:
        try:  # run_pgd_graphs looks its step graph up before the first iteration
            return run_pgd_graphs(self.runtime, views, budget, anchors, cfg, seed=seed, progress=progress, eps=eps)
        except EngineMismatchError:
            if self.fallback is None:
                raise
            log.info("no step graph for this request's shape; using the fallback backend",
                     extra={"views": len(views), "models": list(anchors)})
            return self.fallback.optimise(views, budget, anchors, cfg, seed, eps, progress)


def runtime_chain(preferred: str) -> list[str]:
    """``preferred`` and the less capable runtimes after it in ``RUNTIME_ORDER``."""
    return list(RUNTIME_ORDER[RUNTIME_ORDER.index(preferred):]) if preferred in RUNTIME_ORDER else [preferred]


def open_graph_backend(preferred: str, models: Sequence[str], views: int, cfg: PGDSettings, size: int = 112,
                       engine_dir: str | Path | None = None, fallback: Any | None = None) -> tuple[GraphBackend, list[str]]:
    """Open the first runtime from ``preferred`` down that serves ``models``' embedders and their step graph.

    Returns the backend and the reasons the more capable runtimes were refused (or why the default
    request shape has no step graph); raises EngineUnavailableError when none opens.
    """
    config = RuntimeConfig(kind=preferred) if engine_dir is None else RuntimeConfig(kind=preferred, engine_dir=Path(engine_dir))

    def warm(runtime: Runtime) -> None:
        for model in models:
            runtime.embedder(model)
        if fallback is None:  # without a fallback the default request shape must be served
            runtime.stepper(step_key(tuple(models), views, size, cfg))

    runtime, refusals = open_first_runtime(runtime_chain(preferred), config, warm)
    backend = GraphBackend(runtime, fallback)
    try:
        runtime.stepper(step_key(tuple(models), views, size, cfg))
    except EngineMismatchError as exc:
        refusals.append(f"{runtime.name}: default requests will use the fallback backend: {exc}")
    return backend, refusals

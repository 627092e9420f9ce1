"""The enrollment optimise stage on exported engines: ``facecloak.optimise.backend.OptimiseBackend``
implemented with a runtime from ``engines.runtimes`` (ONNX Runtime or TensorRT; no PyTorch).

A step graph is exported for one surrogate set, one number of views and one mask-set size. Requests with another
shape use ``fallback`` (the PyTorch backend) when one is given, else they fail with
ENGINE_MISMATCH naming the export command that would serve them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from facecloak.errors import BadOptionError
from facecloak.optimise import Anchors, DiversityDraw, LoopState, PGDConfig, StepInputs, Stepper
from facecloak.optimise.backend import OptimiseBackend

from .manifest import EngineMismatchError
from .runtimes import Runtime, RuntimeConfig, StepKey, open_first_runtime

log = logging.getLogger("facecloak.engines")

# Most capable first: a configured runtime falls back to the ones after it.
RUNTIME_ORDER = ("tensorrt", "ort-cuda", "ort-cpu")


def step_key(models: Sequence[str], views: int, size: int, cfg: PGDConfig, members: int = 0) -> StepKey:
    return StepKey(tuple(models), views, size, cfg.baked(), members)


class GraphStepper:
    """One call of a runtime's exported step graph behind the loop's ``Stepper`` interface."""

    def __init__(self, runtime: Runtime, key: StepKey, anchors: Mapping[str, Anchors]) -> None:
        self.runtime, self.run = runtime, runtime.stepper(key)  # raises EngineMismatchError before any work
        self.anchors = {f"{kind}_{model}": np.ascontiguousarray(getattr(a, kind), np.float32)
                        for model, a in anchors.items() for kind in ("near", "far", "user")}

    def __call__(self, fixed: StepInputs, state: LoopState, draw: DiversityDraw) -> tuple[LoopState, float]:
        # The graph's warp gradient assumes scale + shift only (separable); refuse anything else.
        if np.any(draw.theta[:, 0, 1] != 0) or np.any(draw.theta[:, 1, 0] != 0):
            raise BadOptionError("diversity warps must be scale + shift only (no rotation or shear)")
        size = fixed.views.shape[-1]
        out = self.run({"views": fixed.views, "bound": fixed.bound, "steps": fixed.steps,
                        "view_bound": fixed.view_bound, **self.anchors,
                        "delta": state.delta, "alpha": state.alpha, "velocity": state.velocity,
                        "theta": np.ascontiguousarray(draw.theta, np.float32),
                        "resample": self.runtime.resample(size, draw.down_size),
                        "angle": np.ascontiguousarray(draw.angle, np.float32),
                        "spectrum": np.ascontiguousarray(draw.spectrum, np.float32)})
        return LoopState(out["new_delta"], out["new_alpha"], out["new_velocity"]), float(out["loss"])


class GraphBackend:
    """Embeddings and the PGD step on a runtime's exported graphs."""

    def __init__(self, runtime: Runtime, fallback: OptimiseBackend | None = None) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.fallback = fallback
        self._embedders: dict[str, object] = {}

    def embed(self, model: str, faces: np.ndarray) -> np.ndarray:
        if model not in self._embedders:
            self._embedders[model] = self.runtime.embedder(model)
        return self._embedders[model](np.ascontiguousarray(faces, np.float32))  # type: ignore[operator]

    def stepper(self, anchors: Mapping[str, Anchors], views: int, size: int, cfg: PGDConfig) -> Stepper:
        members = next(iter(anchors.values())).members
        try:
            return GraphStepper(self.runtime, step_key(tuple(anchors), views, size, cfg, members), anchors)
        except EngineMismatchError:
            if self.fallback is None:
                raise
            log.info("no step graph for this request's shape; using the fallback backend",
                     extra={"views": views, "models": list(anchors), "members": members})
            return self.fallback.stepper(anchors, views, size, cfg)


def runtime_chain(preferred: str) -> list[str]:
    """``preferred`` and the less capable runtimes after it in ``RUNTIME_ORDER``."""
    return list(RUNTIME_ORDER[RUNTIME_ORDER.index(preferred):]) if preferred in RUNTIME_ORDER else [preferred]


def open_graph_backend(preferred: str, models: Sequence[str], views: int, cfg: PGDConfig, size: int = 112,
                       engine_dir: str | Path | None = None, fallback: OptimiseBackend | None = None,
                       members: int = 0) -> tuple[GraphBackend, list[str]]:
    """Open the first runtime from ``preferred`` down that serves ``models``' embedders and their step graph.

    Returns the backend and the reasons the more capable runtimes were refused (or why the default
    request shape has no step graph); raises EngineUnavailableError when none opens.
    """
    config = RuntimeConfig(kind=preferred) if engine_dir is None else RuntimeConfig(kind=preferred, engine_dir=Path(engine_dir))
    key = step_key(models, views, size, cfg, members)

    def warm(runtime: Runtime) -> None:
        for model in models:
            runtime.embedder(model)
        if fallback is None:  # without a fallback the default request shape must be served
            runtime.stepper(key)

    runtime, refusals = open_first_runtime(runtime_chain(preferred), config, warm)
    backend = GraphBackend(runtime, fallback)
    try:
        runtime.stepper(key)
    except EngineMismatchError as exc:
        refusals.append(f"{runtime.name}: default requests will use the fallback backend: {exc}")
    return backend, refusals

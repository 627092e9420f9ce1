"""The full PGD loop driven by exported step graphs: numpy in, numpy out, no PyTorch.

Same algorithm and order of random draws as ``facecloak.optimise.run_pgd``; each iteration is one
call of the runtime's step graph (loss, input gradient, attention update, projection). This is what
a server runs for enrollment on ONNX Runtime or TensorRT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from facecloak.errors import BadOptionError

from .runtimes import Runtime, StepKey

# The PGD constants a step graph bakes in (a loop run with other values is refused).
BAKED_PGD_FIELDS = ("momentum", "attention", "attention_lr", "self_weight", "grad_sigma")
MIN_DOWN_SIZE = 8  # draw_diversity never goes below 8 px


class PGDSettings(Protocol):
    """The fields of ``facecloak.optimise.PGDConfig`` the loop reads (any object with them will do)."""

    iterations: int
    step: float
    momentum: float
    attention: bool
    attention_lr: float
    self_weight: float
    diversity_prob: float
    diversity_scale: float
    diversity_shift: float
    diversity_downsample: tuple[float, float]
    random_start: bool
    scale_step_with_budget: bool
    grad_sigma: float


class DiversitySource(Protocol):
    """Where the random start's signs and the per-step diversity draws come from."""

    def signs(self, shape: tuple[int, ...]) -> np.ndarray: ...

    def draw(self, n: int, size: int, cfg: PGDSettings) -> tuple[np.ndarray, int]: ...


class NumpyDiversity:
    """``draw_diversity``'s distribution on a numpy generator: random scale/shift per view, one down-size."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def signs(self, shape: tuple[int, ...]) -> np.ndarray:
        return (self.rng.integers(0, 2, shape) * 2 - 1).astype(np.float32)

    def draw(self, n: int, size: int, cfg: PGDSettings) -> tuple[np.ndarray, int]:
        active = (self.rng.random(n) < cfg.diversity_prob).astype(np.float32)
        scale = 1 + (self.rng.random(n) * 2 - 1) * cfg.diversity_scale * active
        shift = (self.rng.random((n, 2)) * 2 - 1) * cfg.diversity_shift * 2 * active[:, None]
        theta = np.zeros((n, 2, 3), np.float32)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = shift
        lo, hi = cfg.diversity_downsample
        factor = lo + float(self.rng.random()) * (hi - lo)
        return theta, min(size, max(MIN_DOWN_SIZE, int(round(size * factor))))


@dataclass(frozen=True)
class SurrogateAnchors:
    """One surrogate's unit vectors: G+ (near), G- (far) and the user's clean embedding."""

    near: np.ndarray
    far: np.ndarray
    user: np.ndarray


@dataclass
class LoopResult:
    delta: np.ndarray  # (3, S, S) effective perturbation (attention applied, projected), float32
    attention: np.ndarray  # (S, S)
    losses: list[float] = field(default_factory=list)


def step_key(models: tuple[str, ...], views: int, size: int, cfg: PGDSettings) -> StepKey:
    return StepKey(models, views, size, tuple((k, float(getattr(cfg, k))) for k in BAKED_PGD_FIELDS))


def _check_inputs(views: np.ndarray, budget: np.ndarray, anchors: Mapping[str, SurrogateAnchors]) -> None:
    if views.ndim != 4 or views.shape[1] != 3 or views.shape[2] != views.shape[3]:
        raise BadOptionError(f"views must be (N, 3, S, S), got {views.shape}")
    if budget.shape != views.shape[2:]:
        raise BadOptionError(f"budget must be (S, S) = {views.shape[2:]}, got {budget.shape}")
    if not anchors:
        raise BadOptionError("at least one surrogate is needed")


def run_pgd_graphs(
    runtime: Runtime,
    views: np.ndarray,
    budget: np.ndarray,
    anchors: Mapping[str, SurrogateAnchors],
    cfg: PGDSettings,
    seed: int = 0,
    source: DiversitySource | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    eps: float | None = None,
) -> LoopResult:
    """Optimise one delta for ``views`` (N, 3, S, S) in [0, 1] under per-pixel ``budget`` (S, S).

    ``anchors`` is ordered like the step graph's surrogate set. ``source`` defaults to a seeded
    numpy stream; pass ``export.step_graph.TorchDiversity(seed)`` to replay ``run_pgd`` exactly.
    ``eps`` is the base budget the step refers to, as in ``run_pgd`` (without it the step is flat).
    """
    if hasattr(cfg, "validate"):
        cfg.validate()
    views = np.ascontiguousarray(views, np.float32)
    _check_inputs(views, budget, anchors)
    n, size = views.shape[0], views.shape[-1]
    step = runtime.stepper(step_key(tuple(anchors), n, size, cfg))
    source = source or NumpyDiversity(seed)
    bound = np.ascontiguousarray(np.broadcast_to(np.asarray(budget, np.float32), (3, size, size)))
    # As run_pgd: a random-sign start at half the base eps (compressible masks, no zero symmetry).
    scale = 0.5 * (np.minimum(bound, np.float32(eps)) if eps else bound)
    delta = (source.signs(bound.shape) * scale).astype(np.float32) if cfg.random_start else np.zeros((3, size, size), np.float32)
    alpha, velocity = np.ones((size, size), np.float32), np.zeros((3, size, size), np.float32)
    steps = cfg.step * bound / eps if cfg.scale_step_with_budget and eps else np.full_like(bound, cfg.step)
    fixed = {"views": views, "bound": bound, "steps": steps}
    for model, a in anchors.items():
        fixed.update({f"near_{model}": a.near, f"far_{model}": a.far, f"user_{model}": a.user})
    fixed = {k: np.ascontiguousarray(v, np.float32) for k, v in fixed.items()}
    losses: list[float] = []
    for it in range(cfg.iterations):
        theta, down = source.draw(n, size, cfg)
        # The graph's warp gradient assumes scale + shift only (separable); refuse anything else.
        if np.any(theta[:, 0, 1] != 0) or np.any(theta[:, 1, 0] != 0):
            raise BadOptionError("diversity warps must be scale + shift only (no rotation or shear)")
        out = step({**fixed, "delta": delta, "alpha": alpha, "velocity": velocity,
                    "theta": np.ascontiguousarray(theta, np.float32), "resample": runtime.resample(size, down)})
        delta, alpha, velocity = out["new_delta"], out["new_alpha"], out["new_velocity"]
        losses.append(float(out["loss"]))
        if progress:
            progress(it + 1, cfg.iterations, losses[-1])
    return LoopResult(np.clip(delta * alpha, -bound, bound).astype(np.float32), alpha, losses)

"""Stage 2b: the PGD loop over all views and an ensemble of surrogates (FaceCloak Eq. 4), once.

One shared delta is optimised for every view at once, with momentum (MI-FGSM) and per-step input
diversity (each view randomly rescaled and shifted, then down/up-sampled, as re-detection and upload
resizing would do to a real photo). The loop owns everything but the step itself: the random-sign
start, the per-pixel step sizes, the diversity draws, progress and the result. How one step is
computed is a ``Stepper``: PyTorch autograd (``optimise.torch_step``) or an exported step graph on a
runtime (``facecloak.engines``). Numpy in, numpy out, so the serving path never imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import BadOptionError
from .budget import Budget
from .config import MIN_DOWN_SIZE, PGDConfig

IterationProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Anchors:
    """One surrogate's unit vectors: G+ (near), G- (far) and the user's clean embedding.

    For a mask set stepped together, ``near`` and ``far`` are (K, D): row k is member k's.
    """

    near: np.ndarray
    far: np.ndarray
    user: np.ndarray

    @property
    def members(self) -> int:
        """K of a set's stacked anchors, 0 for one mask's."""
        return int(np.shape(self.near)[0]) if np.ndim(self.near) == 2 else 0


@dataclass(frozen=True)
class DiversityDraw:
    """The random part of one step's input diversity, drawn by the loop so every step is pure."""

    theta: np.ndarray  # (N, 2, 3) float32 affine_grid matrices: scale + shift only
    down_size: int  # side to down-sample to and back; == S means none
    angle: np.ndarray  # (N,) float32 in-plane rotation in radians (zeros unless PGDConfig.diversity_rotation)
    # (N, 2, 3, S, S) float32 DCT gains and pixel noise of spectrum simulation (ones and zeros unless
    # PGDConfig.spectrum_rho)
    spectrum: np.ndarray


@dataclass(frozen=True)
class StepInputs:
    """What stays fixed over the loop."""

    views: np.ndarray  # (N, 3, S, S) float32 in [0, 1]
    bound: np.ndarray  # (3, S, S) per-pixel budget of the shared delta
    steps: np.ndarray  # (3, S, S) per-pixel step size
    view_bound: np.ndarray  # (N, 1, S, S) what each view lets through of the delta (Budget.view_bound)


@dataclass(frozen=True)
class LoopState:
    delta: np.ndarray  # (3, S, S), or (K, 3, S, S) for a mask set
    alpha: np.ndarray  # (S, S) attention
    velocity: np.ndarray  # like delta: momentum buffer


class Stepper(Protocol):
    """One PGD iteration: loss, input gradient, attention update, projection. Pure."""

    def __call__(self, fixed: StepInputs, state: LoopState, draw: DiversityDraw) -> tuple[LoopState, float]: ...


@dataclass
class PGDResult:
    delta: np.ndarray  # (3, S, S) float32 effective perturbation (attention applied, projected); (K, 3, S, S) for a set
    attention: np.ndarray  # (S, S)
    losses: list[float] = field(default_factory=list)


def draw_diversity(rng: np.random.Generator, n: int, size: int, cfg: PGDConfig) -> DiversityDraw:
    """Per-view random rescale/shift and one down/up-sampling factor for this step."""
    active = (rng.random(n) < cfg.diversity_prob).astype(np.float32)
    scale = 1 + (rng.random(n) * 2 - 1) * cfg.diversity_scale * active
    shift = (rng.random((n, 2)) * 2 - 1) * cfg.diversity_shift * 2 * active[:, None]
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    lo, hi = cfg.diversity_downsample
    factor = lo + float(rng.random()) * (hi - lo)
    angle = np.zeros(n, np.float32)
    if cfg.diversity_rotation:  # drawn only when on, so runs without rotation keep their random stream
        angle = ((rng.random(n) * 2 - 1) * np.deg2rad(cfg.diversity_rotation) * active).astype(np.float32)
    spectrum = np.zeros((n, 2, 3, size, size), np.float32)
    spectrum[:, 0] = 1
    if cfg.spectrum_rho:  # drawn last and only when on, so runs without it keep their random stream
        on = active[:, None, None, None]
        spectrum[:, 0] += (rng.random((n, 3, size, size), np.float32) * 2 - 1) * cfg.spectrum_rho * on
        spectrum[:, 1] = rng.standard_normal((n, 3, size, size), np.float32) * cfg.spectrum_sigma * on
    return DiversityDraw(theta, min(size, max(MIN_DOWN_SIZE, int(round(size * factor)))), angle, spectrum)


def step_sizes(budget: Budget, cfg: PGDConfig) -> np.ndarray:
    """(3, S, S) per-pixel step: ``cfg.step`` at eps pixels, proportionally more where the budget is larger."""
    bound = budget.bound()
    return (cfg.step * bound / budget.eps if cfg.scale_step_with_budget else np.full_like(bound, cfg.step)).astype(np.float32)


def random_start(rng: np.random.Generator, budget: Budget, cfg: PGDConfig, members: int = 0) -> np.ndarray:
    """Random signs at half the base eps (capped by the map); (K, 3, S, S) for a set of ``members``.

    Breaks the symmetry of a zero start (stronger masks) while keeping the values on a coarse grid, so
    the mask stays compressible even when few iterations are run (a uniform start made 3-iteration
    masks 21 KiB).
    """
    bound = budget.bound()
    shape = (members, *bound.shape) if members else bound.shape
    if not cfg.random_start:
        return np.zeros(shape, np.float32)
    signs = rng.integers(0, 2, shape).astype(np.float32) * 2 - 1
    return (signs * 0.5 * np.minimum(bound, np.float32(budget.eps))).astype(np.float32)


def project(delta: np.ndarray, alpha: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Effective perturbation: delta * alpha clipped to the per-pixel budget."""
    return np.clip(delta * alpha, -bound, bound).astype(np.float32)


def run_pgd(step: Stepper, views: np.ndarray, budget: Budget, cfg: PGDConfig, seed: int = 0,
            progress: IterationProgress | None = None, members: int = 0) -> PGDResult:
    """Optimise one delta for all ``views`` (N, 3, S, S) in [0, 1] under ``budget``, or with ``members``
    = K >= 1 a set of K deltas (K, 3, S, S) stepped together (``step`` then takes stacked anchors).

    delta_eff = clip(delta * alpha, -budget, budget); view v sees clip(delta_eff, -b_v, b_v) with b_v
    its own bound (``Budget.view_bound``), and the sum is clipped to [0, 1].
    The same ``seed`` gives the same draws whichever ``step`` computes the iterations.
    """
    cfg.validate()
    views = np.ascontiguousarray(views, np.float32)
    if views.ndim != 4 or views.shape[1] != 3 or views.shape[2] != views.shape[3]:
        raise BadOptionError(f"views must be (N, 3, S, S), got {views.shape}")
    if budget.map.shape != views.shape[2:]:
        raise BadOptionError(f"budget must be (S, S) = {views.shape[2:]}, got {budget.map.shape}")
    n, size = views.shape[0], views.shape[-1]
    rng = np.random.default_rng(seed)
    fixed = StepInputs(views, budget.bound(), step_sizes(budget, cfg), budget.view_bound(n))
    start = random_start(rng, budget, cfg, members)
    state = LoopState(start, np.ones((size, size), np.float32), np.zeros_like(start))
    losses: list[float] = []
    for it in range(cfg.iterations):
        state, loss = step(fixed, state, draw_diversity(rng, n, size, cfg))
        losses.append(loss)
        if progress:
            progress(it + 1, cfg.iterations, loss)
    return PGDResult(project(state.delta, state.alpha, fixed.bound), state.alpha, losses)

"""Baseline perturbations built from the core's pieces: random noise, OPOM class centre, per-image PGD.

All of them reuse ``facecloak.optimise`` (budgets, pgd_step/run_pgd); only the targets differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ..faces import AlignedFrame
from ..faces.crop import AlignedFace
from ..mask import Mask, decode_mask, encode_mask
from ..models import torch_embedder
from ..optimise import BudgetConfig, PGDConfig, SurrogateTarget, budget_map, draw_diversity, pgd_step, project, run_pgd
from ..optimise.pgd import StepState

PER_IMAGE_STEPS = 10  # the per-image reference: 10 steps at the same budget


def frame_landmarks(aligned: AlignedFace) -> np.ndarray:
    """The face's 5 landmarks in its aligned frame (where the budget's stickers are placed)."""
    return np.hstack([aligned.face.landmarks, np.ones((5, 1))]) @ aligned.matrix.T


def face_budget(aligned: AlignedFace, cfg: BudgetConfig) -> np.ndarray:
    """(S, S) per-pixel budget of one aligned face, exactly as enrollment computes it."""
    return budget_map(aligned.crop, frame_landmarks(aligned), cfg)


def shipped(mask: Mask) -> Mask:
    """The mask as a user receives it: through the .fcmask file (quantised levels)."""
    return decode_mask(encode_mask(mask))


def noise_mask(budget: np.ndarray, frame: AlignedFrame, seed: int) -> Mask:
    """Uniform random noise in [-budget, budget] per pixel and channel: the no-optimisation baseline."""
    rng = np.random.default_rng(seed)
    delta = rng.uniform(-1.0, 1.0, (*budget.shape, 3)) * budget[..., None]
    return shipped(Mask(delta=delta.astype(np.float32), frame=frame, models=("noise",)))


def centre_targets(surrogates: Sequence[str], views: torch.Tensor) -> list[SurrogateTarget]:
    """OPOM's class-centre target per surrogate: the mean embedding c of the user's views.

    With both anchors at c the anchor terms of the core's loss cancel and only cos(e, c) is left
    (given self_weight = 1), i.e. push every view away from the identity's class centre.
    """
    targets = []
    for name in surrogates:
        embed = torch_embedder(name)
        with torch.no_grad():
            centre = torch.nn.functional.normalize(embed(views).mean(0), dim=0)
        targets.append(SurrogateTarget(embed, centre, centre, centre))
    return targets


def centre_mask(surrogates: Sequence[str], views: torch.Tensor, budget: np.ndarray, frame: AlignedFrame,
                pgd: PGDConfig, seed: int) -> Mask:
    """A universal mask from the same views and budget as ours, with the class-centre loss."""
    cfg = replace(pgd, self_weight=1.0)
    result = run_pgd(views, torch.from_numpy(budget), centre_targets(surrogates, views), cfg, seed=seed)
    delta = result.delta.permute(1, 2, 0).numpy().astype(np.float32)
    return shipped(Mask(delta=delta, frame=frame, models=tuple(surrogates)))


def per_image_deltas(crops: torch.Tensor, budgets: torch.Tensor, targets: Sequence[SurrogateTarget],
                     pgd: PGDConfig, seed: int) -> torch.Tensor:
    """One delta per image (N, 3, S, S): the core's pgd_step run on a batch of independent deltas.

    pgd_step broadcasts: delta (N,3,S,S), attention (N,1,S,S), budget (N,3,S,S), so view i is only
    ever moved by delta i. The momentum normalisation is over the whole batch rather than per image
    (a step-size detail; updates use the sign).
    """
    cfg = replace(pgd, iterations=PER_IMAGE_STEPS)
    cfg.validate()
    gen = torch.Generator().manual_seed(seed)
    n, size = crops.shape[0], crops.shape[-1]
    bound = budgets[:, None].expand(n, 3, size, size)
    start = (torch.rand(n, 3, size, size, generator=gen) * 2 - 1) * bound if cfg.random_start else torch.zeros_like(bound)
    state = StepState(start, torch.ones(n, 1, size, size), torch.zeros(n, 3, size, size))
    for _ in range(cfg.iterations):
        state, _ = pgd_step(state, crops, bound, targets, cfg, draw_diversity(n, size, cfg, gen))
    return project(state.delta, state.alpha, bound)


def per_image_masks(crops: torch.Tensor, budgets: torch.Tensor, targets: Sequence[SurrogateTarget], frame: AlignedFrame,
                    pgd: PGDConfig, seed: int) -> list[Mask]:
    """Per-image PGD deltas as masks in each probe's own aligned frame (the upper reference)."""
    deltas = per_image_deltas(crops, budgets, targets, pgd, seed)
    return [shipped(Mask(delta=d.permute(1, 2, 0).numpy().astype(np.float32), frame=frame, models=("pgd",))) for d in deltas]

"""Baseline perturbations built from the core's pieces: random noise, OPOM class centre, per-image PGD.

The optimised ones call the core's ``run_pgd`` with the enrollment's PGD settings; only the
targets (centre) or the data (one probe at a time) differ, so they follow any tuning of the core.
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
from ..optimise import Budget, BudgetConfig, PGDConfig, budget_map, run_pgd
from ..optimise.torch_step import SurrogateTarget, TorchStepper

PER_IMAGE_STEPS = 10  # the per-image reference: 10 steps at the same budget


def face_budget(aligned: AlignedFace, cfg: BudgetConfig) -> np.ndarray:
    """(S, S) per-pixel budget of one aligned face, exactly as enrollment computes it."""
    return budget_map(aligned.crop, aligned.frame_landmarks, cfg)


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


def shipped_mask(delta: np.ndarray, frame: AlignedFrame, models: tuple[str, ...]) -> Mask:
    """A (3,S,S) PGD delta as the mask a user receives (see ``shipped``)."""
    return shipped(Mask(delta=np.ascontiguousarray(delta.transpose(1, 2, 0), np.float32), frame=frame, models=models))


def centre_mask(surrogates: Sequence[str], views: torch.Tensor, budget: np.ndarray, frame: AlignedFrame,
                pgd: PGDConfig, eps: float, seed: int) -> Mask:
    """A universal mask from the same views, budget and PGD settings as ours, with the class-centre loss."""
    cfg = replace(pgd, self_weight=1.0)
    result = run_pgd(TorchStepper(centre_targets(surrogates, views), cfg), views.numpy(), Budget(budget, eps), cfg, seed)
    return shipped_mask(result.delta, frame, tuple(surrogates))


def per_image_masks(crops: np.ndarray, budgets: np.ndarray, targets: Sequence[SurrogateTarget], frame: AlignedFrame,
                    pgd: PGDConfig, eps: float, seed: int) -> list[Mask]:
    """Per-image PGD (the upper reference): the core's run_pgd on each probe alone, 10 steps.

    Each mask lives in its own probe's aligned frame (``crops`` (N,3,S,S), ``budgets`` (N,S,S)).
    """
    cfg = replace(pgd, iterations=PER_IMAGE_STEPS)
    step = TorchStepper(targets, cfg)
    return [shipped_mask(run_pgd(step, crop[None], Budget(budget, eps), cfg, seed + i).delta, frame, ("pgd",))
            for i, (crop, budget) in enumerate(zip(crops, budgets))]

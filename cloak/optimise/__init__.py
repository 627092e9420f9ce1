"""Stage 2b: per-pixel budgets and the PGD loop (numpy; the PyTorch step lives in ``torch_step``)."""

from .budget import Budget, BudgetConfig, budget_map, highpass_mask, sticker_mask
from .config import PGDConfig
from .loop import Anchors, DiversityDraw, LoopState, PGDResult, StepInputs, Stepper, draw_diversity, run_pgd

__all__ = ["Anchors", "Budget", "BudgetConfig", "DiversityDraw", "LoopState", "PGDConfig", "PGDResult", "StepInputs",
           "Stepper", "budget_map", "draw_diversity", "highpass_mask", "run_pgd", "sticker_mask"]

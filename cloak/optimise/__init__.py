"""Stage 2b: per-pixel budgets and the batched PGD loop."""

from .budget import BudgetConfig, budget_map, highpass_mask, sticker_mask
from .pgd import DiversityDraw, PGDConfig, PGDResult, StepState, SurrogateTarget, cloak_loss, draw_diversity, pgd_step, project, run_pgd

__all__ = ["DiversityDraw", "StepState", "draw_diversity", "pgd_step", "project", "BudgetConfig", "PGDConfig", "PGDResult", "SurrogateTarget", "budget_map", "cloak_loss", "highpass_mask", "run_pgd", "sticker_mask"]

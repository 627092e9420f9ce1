"""Stage 2b: per-pixel budgets and the batched PGD loop."""

from .budget import BudgetConfig, budget_map, highpass_mask, sticker_mask
from .pgd import PGDConfig, PGDResult, SurrogateTarget, cloak_loss, run_pgd

__all__ = ["BudgetConfig", "PGDConfig", "PGDResult", "SurrogateTarget", "budget_map", "cloak_loss", "highpass_mask", "run_pgd", "sticker_mask"]

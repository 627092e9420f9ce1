"""The separation-margin probe (bench/) measures what it claims: the core's term at margin -1, none above 1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from facecloak.optimise.torch_step import mean_pairwise_cosine

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from separation_margin_probe import hinged_pairwise_cosine  # noqa: E402


def test_the_hinge_is_the_core_term_at_margin_minus_one_and_drops_pairs_below_the_margin() -> None:
    emb = torch.randn(4, 3, 128, generator=torch.Generator().manual_seed(0))
    assert float(hinged_pairwise_cosine(emb, -1.0)) - 1 == pytest.approx(float(mean_pairwise_cosine(emb)), abs=1e-5)
    assert float(hinged_pairwise_cosine(emb, 1.0)) == 0.0
    same = torch.randn(1, 2, 8).expand(3, 2, 8)  # three identical members: every pair at cosine 1
    assert float(hinged_pairwise_cosine(same, 0.25)) == pytest.approx(0.75, abs=1e-5)

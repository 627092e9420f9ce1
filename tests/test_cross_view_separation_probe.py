"""The cross-view separation probe (bench/) measures what it claims: every pair of cloaked rows but self."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facecloak.optimise.torch_step import SurrogateTarget, cloak_loss, mean_pairwise_cosine

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from cross_view_separation_probe import all_pairs_cosine, cross_view_cloak_loss  # noqa: E402


def test_all_pairs_cosine_is_the_brute_force_mean_over_distinct_rows() -> None:
    emb = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(0))
    rows = F.normalize(emb.reshape(12, 16), dim=-1)
    brute = torch.stack([rows[a] @ rows[b] for a, b in itertools.permutations(range(12), 2)]).mean()
    assert float(all_pairs_cosine(emb)) == pytest.approx(float(brute), abs=1e-5)
    # one view per member: only the core's pairs exist, so the two terms agree
    assert float(all_pairs_cosine(emb[:, :1])) == pytest.approx(float(mean_pairwise_cosine(emb[:, :1])), abs=1e-5)


def test_one_mask_gets_the_term_and_weight_zero_is_the_core_loss() -> None:
    g = torch.Generator().manual_seed(1)
    target = SurrogateTarget(lambda x: x, *(F.normalize(torch.randn(8, generator=g), dim=0) for _ in range(3)))
    emb = torch.randn(5, 8, generator=g)
    core = float(cloak_loss(emb, target, 0.5, 3.0))  # the core ignores separation for one mask
    assert float(cross_view_cloak_loss(emb, target, 0.5, 0.0)) == pytest.approx(core, abs=1e-6)
    assert float(cross_view_cloak_loss(emb, target, 0.5, 3.0)) == pytest.approx(core + 3 * float(all_pairs_cosine(emb)), abs=1e-5)

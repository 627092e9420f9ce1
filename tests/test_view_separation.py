"""The view-separation term (PGDConfig.view_separation): what it computes, and that it keeps a mask's cloaked photos apart."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from facecloak.assets import assets_dir
from facecloak.enroll import EnrollConfig, Enroller
from facecloak.errors import BadOptionError
from facecloak.imageio import read_image
from facecloak.optimise import PGDConfig
from facecloak.optimise.torch_step import SurrogateTarget, cloak_loss, cross_view_cosine

from .conftest import cloaked_sface_similarity

BLAIR = assets_dir() / "faces/lfw/Tony_Blair"


def test_cross_view_cosine_is_the_mean_over_pairs_of_different_views() -> None:
    emb = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(0))
    unit = F.normalize(emb, dim=-1)
    pairs = [unit[j, a] @ unit[k, b] for j, k in itertools.product(range(3), repeat=2)
             for a, b in itertools.permutations(range(4), 2)]
    assert float(cross_view_cosine(emb)) == pytest.approx(float(torch.stack(pairs).mean()), abs=1e-5)
    one_mask = [unit[0, a] @ unit[0, b] for a, b in itertools.permutations(range(4), 2)]
    assert float(cross_view_cosine(emb[0])) == pytest.approx(float(torch.stack(one_mask).mean()), abs=1e-5)


def test_the_loss_adds_the_weighted_term_and_the_weight_is_validated() -> None:
    g = torch.Generator().manual_seed(1)
    target = SurrogateTarget(lambda x: x, *(F.normalize(torch.randn(8, generator=g), dim=0) for _ in range(3)))
    emb = torch.randn(5, 8, generator=g)
    plain = float(cloak_loss(emb, target, 0.5))
    assert float(cloak_loss(emb, target, 0.5, view_separation=3.0)) == pytest.approx(plain + 3 * float(cross_view_cosine(emb)), abs=1e-5)
    assert float(cloak_loss(emb[:1], target, 0.5, view_separation=3.0)) == pytest.approx(float(cloak_loss(emb[:1], target, 0.5)))
    with pytest.raises(BadOptionError, match="view_separation"):
        PGDConfig(view_separation=-1).validate()


def test_the_view_separation_keeps_cloaked_photos_of_the_user_apart() -> None:
    """Same photo, anchors and draws: with the term, the mask sends three photos of the person it never saw to
    less similar places (what links a user's cloaked photos) than without it."""
    held_out = [read_image(BLAIR / f"Tony_Blair_000{i}.jpg") for i in (2, 3, 4)]
    similarity = {}
    for weight in (0.0, 10.0):
        config = EnrollConfig(surrogates=("sface",), views=4, check_views=0, pgd=PGDConfig(iterations=6, view_separation=weight))
        result = Enroller().enroll(read_image(BLAIR / "Tony_Blair_0001.jpg"), config)
        similarity[weight] = cloaked_sface_similarity(held_out, [result.masks[0].delta])
    assert similarity[10.0] < similarity[0.0] - 0.05, similarity

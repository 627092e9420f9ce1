"""Metric code on hand-made galleries where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from facecloak.evaluate.metrics import (
    NO_FACE_SCORE, NOT_FOUND, identity_scores, impostor_scores, psr_at_k, threshold_at_far, true_ranks,
    verification_psr,
)


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def rank_of(probe: np.ndarray, gallery: np.ndarray, labels: list[int], truth: int, keep: list[bool] | None = None) -> int:
    sims = gallery @ probe
    n_ids = max(labels) + 1
    scores = identity_scores(sims[None], np.array(labels), n_ids, None if keep is None else np.array(keep)[None])
    return int(true_ranks(scores, [truth])[0])


def test_top1_succeeds_when_the_true_identity_is_nearest():
    gallery = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    rank = rank_of(unit(0.9, 0.1, 0), gallery, [0, 1, 2], truth=0)
    assert rank == 0
    assert psr_at_k([rank], 1) == 0.0  # recognised: not protected


def test_top1_fails_when_another_identity_is_nearer():
    gallery = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    rank = rank_of(unit(0.2, 0.9, 0.1), gallery, [0, 1, 2], truth=0)
    assert rank == 1
    assert psr_at_k([rank], 1) == 1.0  # protected at top-1 ...
    assert psr_at_k([rank], 5) == 0.0  # ... but still found in the top-5


def test_identity_score_is_the_best_of_its_photos():
    # Identity 0 has one far and one near photo: its best photo decides.
    gallery = np.stack([unit(0, 0, 1), unit(1, 0.05, 0), unit(1, 0.3, 0)])
    assert rank_of(unit(1, 0, 0), gallery, [0, 0, 1], truth=0) == 0


def test_leave_one_out_drops_the_probes_own_clean_photo():
    # The only close entry of identity 0 is the probe's own clean copy; without it identity 1 wins.
    gallery = np.stack([unit(1, 0, 0), unit(0, 0, 1), unit(0.8, 0.6, 0)])
    probe = unit(1, 0.01, 0)
    assert rank_of(probe, gallery, [0, 0, 1], truth=0) == 0
    assert rank_of(probe, gallery, [0, 0, 1], truth=0, keep=[False, True, True]) == 1


def test_identity_with_no_entries_left_is_never_found():
    gallery = np.stack([unit(1, 0), unit(0, 1)])
    assert rank_of(unit(1, 0), gallery, [0, 1], truth=0, keep=[False, True]) == 2  # = n_ids


def test_top5_edges():
    # Identities 1..5 beat the true identity 0 in order: rank 5 -> outside the top-5.
    angles = np.linspace(0.0, 0.5, 6)  # identity i at angle angles[...]
    probe = unit(1, 0)
    others = [unit(np.cos(a), np.sin(a)) for a in angles[:5]]  # closest five
    true_far = unit(np.cos(0.6), np.sin(0.6))
    gallery = np.stack([true_far, *others])
    rank = rank_of(probe, gallery, [0, 1, 2, 3, 4, 5], truth=0)
    assert rank == 5
    assert psr_at_k([rank], 5) == 1.0
    # Drop one beater: rank 4 is exactly the 5th place, which is a top-5 hit.
    rank = rank_of(probe, gallery[:5], [0, 1, 2, 3, 4], truth=0)
    assert rank == 4
    assert psr_at_k([rank], 5) == 0.0
    assert psr_at_k([rank], 4) == 1.0


def test_ties_go_to_the_attacker():
    gallery = np.stack([unit(1, 1), unit(1, 1)])
    assert rank_of(unit(1, 0), gallery, [0, 1], truth=0) == 0


def test_psr_counts_missed_faces_as_protected_and_mixes():
    assert psr_at_k([NOT_FOUND], 1) == 1.0
    assert psr_at_k([0, 1, 7, NOT_FOUND], 1) == 0.75
    assert psr_at_k([0, 1, 7, NOT_FOUND], 5) == 0.5
    assert np.isnan(psr_at_k([], 1))


def test_threshold_accepts_at_most_far_of_impostors():
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    t = threshold_at_far(impostor, 1e-3)
    assert np.sum(impostor >= t) == 1  # exactly floor(1e-3 * 1000) accepted
    assert 0.998 < t <= 0.999
    t = threshold_at_far(impostor, 1e-2)
    assert np.sum(impostor >= t) == 10
    # Fewer pairs than 1/FAR: nothing may be accepted.
    t = threshold_at_far(np.array([0.1, 0.5, 0.3]), 1e-3)
    assert t > 0.5
    with pytest.raises(ValueError):
        threshold_at_far(np.array([]), 1e-3)


def test_impostor_pairs_are_the_different_label_pairs():
    emb = np.stack([unit(1, 0), unit(1, 0), unit(0, 1)])
    scores = impostor_scores(emb, np.array([0, 0, 1]))
    assert sorted(scores.tolist()) == pytest.approx([0.0, 0.0])  # (0,2) and (1,2); (0,1) is genuine


def test_verification_psr_at_threshold():
    genuine = [[0.9, 0.2], [0.5], [NO_FACE_SCORE, NO_FACE_SCORE]]
    assert verification_psr(genuine, 0.4) == pytest.approx(3 / 5)  # 0.2 and both missed-face pairs rejected
    assert verification_psr(genuine, 0.1) == pytest.approx(2 / 5)
    assert np.isnan(verification_psr([], 0.4))

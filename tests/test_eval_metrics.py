"""Metric code on hand-made galleries where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from facecloak.evaluate.metrics import (
    NO_FACE_SCORE, NOT_FOUND, best_other_scores, cloaked_gallery_counts, identity_scores, impostor_scores, linked_counts,
    pair_scores, psr_at_k, threshold_at_far, true_ranks, verification_psr,
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


# One person's three cloaked probes and a clean gallery of identity 0 (the person, two photos) and identity 1.
# Cloaked photos 0 and 1 carry the same pattern (the same place in embedding space); photo 2 does not.
CLOAKED = np.stack([unit(1, 0, 0), unit(1, 0, 0), unit(0.6, 0.8, 0)])
GALLERY = np.stack([unit(0, 0, 1), unit(0, 0.1, 1), unit(0.6, 0.8, 0.3)])
LABELS = np.array([0, 0, 1])


def cloaked_outcomes(found: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    scores = identity_scores(CLOAKED @ GALLERY.T, LABELS, 2)
    return pair_scores(CLOAKED, np.array(found)), best_other_scores(scores, truth=0)


def test_pair_scores_are_the_upper_triangle_with_missing_faces_nan():
    pairs, other = cloaked_outcomes([True, True, True])
    assert pairs == pytest.approx([1.0, 0.6, 0.6])  # (0, 1), (0, 2), (1, 2)
    assert other == pytest.approx(GALLERY[2] @ CLOAKED.T)  # identity 1, the only other identity
    pairs, _ = cloaked_outcomes([True, False, True])
    assert np.isnan(pairs[0]) and pairs[1] == pytest.approx(0.6) and np.isnan(pairs[2])
    assert best_other_scores(np.array([[0.9, 0.2, 0.4]]), truth=0) == pytest.approx([0.4])


def test_cloaked_gallery_attack_ranks_each_probe_against_one_cloaked_photo():
    pairs, other = cloaked_outcomes([True, True, True])
    # other = (0.57, 0.57, 0.96): probes 0 and 1 are recognised from any cloaked photo (1.0 and 0.6 beat 0.57);
    # probe 2 is nearer identity 1's clean photo (0.96) than any cloaked photo of the person (0.6).
    assert cloaked_gallery_counts(pairs, other, [True, True, True]) == (2, 6)  # (2, 0) and (2, 1) protected
    # Against the clean gallery the person's clean photos are far from every cloaked probe: all protected.
    assert true_ranks(identity_scores(CLOAKED @ GALLERY.T, LABELS, 2), [0, 0, 0]).tolist() == [1, 1, 1]


def test_cloaked_gallery_splits_trials_by_shared_member():
    pairs, other = cloaked_outcomes([True, True, True])
    members = [0, 1, 0]  # photos 0 and 2 carry member 0: trials (0, 2) recognised, (2, 0) protected
    same = cloaked_gallery_counts(pairs, other, [True] * 3, members, same_member=True)
    different = cloaked_gallery_counts(pairs, other, [True] * 3, members, same_member=False)
    assert same == (1, 2)
    assert different == (1, 4)  # (2, 1) protected; (0, 1), (1, 0), (1, 2) recognised
    assert tuple(map(sum, zip(same, different))) == cloaked_gallery_counts(pairs, other, [True] * 3)
    with pytest.raises(ValueError, match="one member per photo"):
        cloaked_gallery_counts(pairs, other, [True] * 3, [0, 1], same_member=True)


def test_cloaked_gallery_ties_go_to_the_attacker():
    pairs = np.array([0.5])
    assert cloaked_gallery_counts(pairs, [0.5, 0.5], [True, True]) == (0, 2)  # a tie is a recognition
    assert cloaked_gallery_counts(pairs, [0.5001, 0.4], [True, True]) == (1, 2)


def test_cloaked_gallery_missing_faces():
    # Photo 1 has no face: as a probe it is protected (trials (1, 0), (1, 2)); as the gallery photo
    # it cannot be enrolled, so (0, 1) and (2, 1) are no trials at all.
    found = [True, False, True]
    pairs, other = cloaked_outcomes(found)
    assert cloaked_gallery_counts(pairs, other, found) == (3, 4)  # (1, 0), (1, 2), (2, 0) protected; (0, 2) not
    assert cloaked_gallery_counts(pairs, other, [False, False, True]) == (2, 2)  # only photo 2 can be the gallery entry
    assert cloaked_gallery_counts([], [0.3], [True]) == (0, 0)  # one probe: no pair


def test_linked_pairs_at_the_threshold():
    pairs, _ = cloaked_outcomes([True, True, True])
    assert linked_counts(pairs, 0.7) == (1, 3)
    assert linked_counts(pairs, 0.6 - 1e-9) == (3, 3)
    assert linked_counts([0.5, 0.49], 0.5) == (1, 2)  # accepted at score >= threshold, as threshold_at_far's rule
    missing, _ = cloaked_outcomes([True, False, True])
    assert linked_counts(missing, 0.0) == (1, 3)  # pairs with photo 1 (no face) are never linked
    assert linked_counts([], 0.5) == (0, 0)

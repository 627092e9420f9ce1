"""Protection metrics: identification rank, top-k PSR, threshold at a FAR, verification PSR, and the
cloaked-gallery attack and linkability of one person's cloaked photos.

Pure numpy on embeddings and labels, so every rule can be checked on hand-made galleries.
Ties go to the attacker: a probe counts as recognised if its true identity scores at least as
high as the k-th best other identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOT_FOUND = -1  # rank stored for a probe in which the attacker's detector found no face
NO_FACE_SCORE = -2.0  # verification score stored for such a probe: below any cosine, always rejected


def identity_scores(sims: np.ndarray, labels: np.ndarray, n_ids: int, keep: np.ndarray | None = None) -> np.ndarray:
    """(P, G) probe-to-entry similarities -> (P, n_ids) best similarity per identity.

    Entries with ``keep`` False (e.g. the probe's own clean photo, leave-one-out) are ignored;
    an identity with no remaining entries scores -inf.
    """
    sims = np.atleast_2d(np.asarray(sims, dtype=np.float64))
    if keep is not None:
        sims = np.where(np.atleast_2d(keep), sims, -np.inf)
    out = np.full((sims.shape[0], n_ids), -np.inf)
    for i in range(sims.shape[0]):  # per probe: ufunc.at has no row-wise form
        np.maximum.at(out[i], labels, sims[i])
    return out


def true_ranks(scores: np.ndarray, truth: Sequence[int]) -> np.ndarray:
    """0-based rank of each probe's true identity among (P, n_ids) identity scores (0 = top-1).

    Rank = number of other identities scoring strictly higher, so ties favour the attacker.
    A true identity with no gallery entries left gets rank n_ids (never found).
    """
    scores = np.atleast_2d(scores)
    truth = np.asarray(truth, dtype=np.int64)
    own = scores[np.arange(len(truth)), truth]
    ranks = (scores > own[:, None]).sum(axis=1)
    return np.where(np.isneginf(own), scores.shape[1], ranks)


def protected_at_k(ranks: Sequence[int], k: int) -> np.ndarray:
    """Per probe: is its true identity outside the top ``k``? NOT_FOUND (no face detected) counts as protected."""
    ranks = np.asarray(ranks, dtype=np.int64)
    return (ranks == NOT_FOUND) | (ranks >= k)


def psr_at_k(ranks: Sequence[int], k: int) -> float:
    """Protection success rate: share of probes whose true identity is not in the top ``k``."""
    protected = protected_at_k(ranks, k)
    return float(protected.mean()) if protected.size else float("nan")


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Lowest cosine threshold t (accept when score >= t) that accepts at most ``far`` of the impostors."""
    scores = np.sort(np.asarray(impostor, dtype=np.float64).ravel())[::-1]
    if scores.size == 0:
        raise ValueError("no impostor scores")
    allowed = int(np.floor(far * scores.size))
    if allowed >= scores.size:
        return float(scores[-1])
    # Just above the first impostor that must be rejected; ties there are all rejected.
    return float(np.nextafter(scores[allowed], np.inf))


def impostor_scores(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine similarities of every pair of entries with different labels (upper triangle)."""
    sims = embeddings @ embeddings.T
    i, j = np.triu_indices(len(labels), k=1)
    different = labels[i] != labels[j]
    return sims[i[different], j[different]]


def verification_psr(genuine: Sequence[Sequence[float]], threshold: float) -> float:
    """Share of (cloaked probe, clean genuine photo) pairs the verifier rejects (score < threshold).

    ``genuine`` holds one list per probe (a probe with no detected face holds NO_FACE_SCORE).
    """
    flat = [s for probe in genuine for s in probe]
    if not flat:
        return float("nan")
    return float(np.mean(np.asarray(flat) < threshold))


def pair_scores(emb: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair i < j of one person's photos, in ``np.triu_indices(N, 1)`` order.

    ``emb`` (N, D) unit embeddings; a pair where either photo has no detected face (``found`` False) is NaN.
    """
    found = np.asarray(found, dtype=bool)
    i, j = np.triu_indices(len(found), k=1)
    sims = np.asarray(emb, dtype=np.float64) @ np.asarray(emb, dtype=np.float64).T
    return np.where(found[i] & found[j], sims[i, j], np.nan)


def best_other_scores(scores: np.ndarray, truth: int) -> np.ndarray:
    """(P, n_ids) identity scores -> (P,) best score of any identity but ``truth``: what the true identity
    must reach to be top-1, whatever its own gallery entries are."""
    others = np.delete(np.atleast_2d(scores), truth, axis=1)
    return others.max(axis=1) if others.shape[1] else np.full(others.shape[0], -np.inf)


def _square(pairs: np.ndarray, n: int) -> np.ndarray:
    """Upper-triangle pair scores (``pair_scores`` order) -> symmetric (n, n) matrix, NaN on the diagonal."""
    out = np.full((n, n), np.nan)
    i, j = np.triu_indices(n, k=1)
    out[i, j] = out[j, i] = pairs
    return out


def cloaked_gallery_counts(pairs: Sequence[float], other: Sequence[float], found: Sequence[bool],
                           members: Sequence[int] | None = None, same_member: bool | None = None) -> tuple[int, int]:
    """Cloaked-gallery attack on one person: (protected trials, trials).

    Trial (i, j), i != j: probe i against a gallery where the person is represented only by their
    cloaked photo j and every other identity by its clean entries (``other``: ``best_other_scores``).
    The person is top-1 when pairs(i, j) >= other[i] (ties go to the attacker). A probe with no
    detected face is protected; a photo j with no detected face cannot be enrolled, so its trials are skipped.
    With a mask set, ``members`` (the member that cloaked each photo) and ``same_member`` keep only the
    trials whose two photos carry the same member (True) or different members (False).
    """
    found = np.asarray(found, dtype=bool)
    n = len(found)
    sims = _square(np.asarray(pairs, dtype=np.float64), n)
    other = np.asarray(other, dtype=np.float64)
    trials = found[None, :] & ~np.eye(n, dtype=bool)  # column j: the gallery photo
    if same_member is not None:
        if members is None or len(members) != n:
            raise ValueError(f"same_member needs one member per photo ({n}), got {members!r}")
        ids = np.asarray(members)
        trials &= (ids[:, None] == ids[None, :]) == same_member
    recognised = found[:, None] & (sims >= other[:, None])
    return int((trials & ~recognised).sum()), int(trials.sum())


def linked_counts(pairs: Sequence[float], threshold: float) -> tuple[int, int]:
    """Linkability of one person's cloaked photos: (pairs verified as the same person, pairs).

    A pair i < j is linked when its score is >= the verification ``threshold`` (accept rule of
    ``threshold_at_far``); a pair with a missing face (NaN) is not linked.
    """
    pairs = np.asarray(pairs, dtype=np.float64)
    return int((pairs >= threshold).sum()), int(pairs.size)

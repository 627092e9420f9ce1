"""How sure a PSR figure is: 95% intervals from a bootstrap over people.

One mask serves all of a person's probes, so their outcomes are correlated; a binomial interval over
probes would be too narrow. People are resampled with replacement instead (a cluster bootstrap), and
a gap between two methods resamples the same people for both (paired), which cancels the
person-to-person spread the two rows share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 4000


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def spans_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


def _people(protected: Sequence[int | None], probes: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
    if len(protected) != len(probes):
        raise ValueError(f"{len(protected)} protected counts for {len(probes)} probe counts")
    keep = [i for i, (p, n) in enumerate(zip(protected, probes)) if p is not None and n]
    if not keep:
        raise ValueError("no person with probes to resample")
    return np.asarray([protected[i] for i in keep], float), np.asarray([probes[i] for i in keep], float)


def _resampled_people(n_people: int, seed: int) -> np.ndarray:
    """RESAMPLES x n_people indices: the same draws for every row given the same seed (paired gaps)."""
    return np.random.default_rng(seed).integers(0, n_people, size=(RESAMPLES, n_people))


def _interval(value: float, draws: np.ndarray) -> Interval:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(round(float(value), 4), round(float(low), 4), round(float(high), 4))


def psr_interval(protected: Sequence[int | None], probes: Sequence[int | None], seed: int = 0) -> Interval:
    """A row's pooled PSR (protected / probes over people) with its 95% people-bootstrap interval."""
    hits, counts = _people(protected, probes)
    picks = _resampled_people(len(hits), seed)
    return _interval(hits.sum() / counts.sum(), hits[picks].sum(1) / counts[picks].sum(1))


def gap_interval(protected_a: Sequence[int | None], protected_b: Sequence[int | None],
                 probes: Sequence[int | None], seed: int = 0) -> Interval:
    """PSR(a) - PSR(b) over the same people and probes, with its paired 95% bootstrap interval.

    A person missing from either row is left out of both.
    """
    both = [None if a is None or b is None else n for a, b, n in zip(protected_a, protected_b, probes)]
    a, counts = _people(protected_a, both)
    b, _ = _people(protected_b, both)
    picks = _resampled_people(len(a), seed)
    per_draw = counts[picks].sum(1)
    return _interval((a.sum() - b.sum()) / counts.sum(), (a[picks].sum(1) - b[picks].sum(1)) / per_draw)

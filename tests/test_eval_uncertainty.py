"""The benchmark's intervals on hand-made people where the answer is known."""

from __future__ import annotations

import pytest

from facecloak.evaluate.uncertainty import gap_interval, psr_interval


def test_identical_people_leave_no_doubt():
    ci = psr_interval([3, 3, 3, 3], [9, 9, 9, 9])
    assert (ci.value, ci.low, ci.high) == (pytest.approx(1 / 3, abs=1e-4),) * 3


def test_people_not_probes_are_resampled():
    # two people, one fully protected, one not at all: the pooled 50% could as well be 0% or 100%
    ci = psr_interval([9, 0], [9, 9])
    assert (ci.value, ci.low, ci.high) == (0.5, 0.0, 1.0)
    # a binomial interval over 18 probes would be about 27%..73%; many people narrow it honestly
    wide, narrow = psr_interval([9, 0] * 2, [9, 9] * 2), psr_interval([9, 0] * 200, [9, 9] * 200)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 3 and narrow.low < 0.5 < narrow.high


def test_paired_gap_cancels_the_spread_both_rows_share():
    # each person protected exactly one probe more by a than by b, yet people differ a lot
    a, b, probes = [9, 5, 1, 8, 2], [8, 4, 0, 7, 1], [9] * 5
    gap = gap_interval(a, b, probes)
    assert (gap.value, gap.low, gap.high) == (pytest.approx(1 / 9, abs=1e-4),) * 3 and not gap.spans_zero()
    assert psr_interval(a, probes).high - psr_interval(a, probes).low > 0.3  # unpaired, the rows overlap widely
    assert gap_interval(b, b, probes).spans_zero()


def test_people_missing_from_a_row_are_left_out_of_both():
    gap = gap_interval([9, None, 0], [0, 3, 0], [9, 9, 9])
    assert gap.value == 0.5  # (9 - 0 + 0 - 0) / 18: the second person is dropped from both rows


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="2 protected counts for 3 probe counts"):
        psr_interval([1, 2], [9, 9, 9])
    with pytest.raises(ValueError, match="no person"):
        psr_interval([None], [9])

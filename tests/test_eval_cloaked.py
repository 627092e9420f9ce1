"""The cloaked-gallery attack and linkability in the benchmark's rows and report (hand-made records)."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from facecloak.evaluate.metrics import NOT_FOUND
from facecloak.evaluate.protocol import EvalConfig
from facecloak.evaluate.report import write_report
from facecloak.evaluate.summary import summarise

CFG = replace(EvalConfig(), surrogates=("sface",), targets=("facenet",), jpeg=(90,), budget_scales=())
THRESHOLD = 0.5


def variant(method: str, surrogate: str, ranks: list[int], other: list | None = None, pairs: list | None = None) -> dict:
    out: dict = {"rank": ranks, "genuine": [[0.1]] * len(ranks)}
    if pairs is not None:  # records written before the cloaked-photo attacks lack both fields
        out.update(other=other, pairs=pairs)
    return {"method": method, "surrogate": surrogate, "scale": 1.0, "ssim": [0.9] * len(ranks), "psnr": [30.0] * len(ranks),
            "attack": {"90": {"facenet": out}}}


RECORDS = [
    # Person A, 3 probes, pairs (0,1) (0,2) (1,2). Ours: probe 1 has no face (rank NOT_FOUND, other null).
    {"person": "A", "variants": [
        variant("clean", "-", [0, 0, 0], [0.3, 0.3, 0.3], [0.8, 0.7, 0.6]),
        variant("ours", "sface", [3, NOT_FOUND, 2], [0.4, None, 0.5], [None, 0.5, None]),
    ]},
    # Person B, 2 probes, one pair.
    {"person": "B", "variants": [
        variant("clean", "-", [0, 1], [0.3, 0.9], [0.9]),
        variant("ours", "sface", [1, 1], [0.6, 0.2], [0.4]),
    ]},
]


def rows_of(records: list[dict]) -> dict[str, dict]:
    return {r["method"]: r for r in summarise(records, CFG, {"facenet": THRESHOLD})}


def test_rows_pool_per_person_cloaked_gallery_and_linked_counts():
    rows = rows_of(RECORDS)
    clean, ours = rows["clean"], rows["ours"]
    # Clean A: every pair beats the best other identity (0.3) -> 0 of 6 protected; all 3 pairs >= 0.5 linked.
    # Clean B: probe 0 recognised from probe 1 (0.9 >= 0.3), probe 1 not (0.9 < 0.9 is false: a tie -> recognised).
    assert (clean["person_cloaked_gallery"], clean["person_trials"]) == ([0, 0], [6, 2])
    assert (clean["person_linked"], clean["person_pairs"]) == ([3, 1], [3, 1])
    assert (clean["cloaked_gallery_top1_psr"], clean["linked"]) == (0.0, 1.0)
    # Ours A: photo 1 has no face: (0,1), (2,1) are no trials; (1,0), (1,2) protected; (0,2): 0.5 >= 0.4 recognised,
    # (2,0): 0.5 >= 0.5 a tie, recognised -> 2 of 4. Linked: only (0,2) at 0.5 >= 0.5.
    # Ours B: (0,1): 0.4 < 0.6 protected, (1,0): 0.4 >= 0.2 recognised -> 1 of 2; 0.4 < 0.5 not linked.
    assert (ours["person_cloaked_gallery"], ours["person_trials"]) == ([2, 1], [4, 2])
    assert (ours["person_linked"], ours["person_pairs"]) == ([1, 0], [3, 1])
    assert ours["cloaked_gallery_top1_psr"] == pytest.approx(3 / 6, abs=1e-4) and ours["linked"] == 0.25
    for key in ("cloaked_gallery_top1_psr", "linked"):
        low, high = ours[f"{key}_ci"]
        assert 0 <= low <= ours[key] <= high <= 1


def test_records_without_the_fields_still_summarise_and_report(tmp_path):
    old = [{**r, "variants": [{**v, "attack": {"90": {"facenet": {k: v["attack"]["90"]["facenet"][k] for k in ("rank", "genuine")}}}}
                              for v in r["variants"]]} for r in RECORDS]
    rows = rows_of(old)
    for row in rows.values():
        assert row["cloaked_gallery_top1_psr"] is None and row["cloaked_gallery_top1_psr_ci"] is None
        assert row["linked"] is None and row["linked_ci"] is None and row["person_pairs"] == [None, None]
        assert row["top1_psr"] == rows_of(RECORDS)[row["method"]]["top1_psr"]  # the rest is unchanged
    # A run mixing old and new records: the figures pool the people who have them.
    mixed = rows_of([old[0], RECORDS[1]])["ours"]
    assert mixed["person_trials"] == [None, 2] and mixed["cloaked_gallery_top1_psr"] == 0.5
    assert "Cloaked-gallery attack" not in report(tmp_path, list(rows.values()))


def report(tmp_path, rows: list[dict]) -> str:
    results = {
        "config": asdict(CFG), "rows": rows, "lpips": "not measured", "seconds": {"total": 1.0},
        "thresholds": {"facenet": {"far": 1e-3, "threshold": THRESHOLD, "impostor_pairs": 1000}},
        "dataset": {"people": ["A", "B"], "gallery": {"photos": 20, "identities": 12, "lfw_people": 2, "distractors": 10},
                    "anchors": {"identities": 500}},
    }
    return write_report(results, tmp_path).read_text()


def test_report_shows_both_attacks_beside_the_clean_gallery_psr(tmp_path):
    text = report(tmp_path, list(rows_of(RECORDS).values()))
    section = text.split("## Cloaked-gallery attack and linkability: black-box rows, JPEG 90")[1].split("\n## ")[0]
    # clean: top-1 PSR 1 of 5 (B's probe 1 is rank 1); ours: cloaked gallery 3 of 6 trials, both people at 1/2
    assert "| clean (no cloak) | - | facenet | none | 20.0% (0.0–50.0) | 0.0% (0.0–0.0) | – | – | 100.0% (100.0–100.0) | 8 | 4 |" in section
    assert "| ours (full) | sface | facenet | black-box | 100.0% (100.0–100.0) | 50.0% (50.0–50.0) | – | – | 25.0% (0.0–33.3) | 6 | 4 |" in section


def with_members(records: list[dict], members: dict[str, list[int]]) -> list[dict]:
    """``records`` with each person's ours variant cloaked by a mask set (``members``: per probe)."""
    return [{**r, "variants": [{**v, "members": members[r["person"]]} if v["method"] == "ours" else v for v in r["variants"]]}
            for r in records]


def test_a_mask_set_splits_the_cloaked_gallery_attack_by_shared_member(tmp_path):
    rows = rows_of(with_members(RECORDS, {"A": [0, 1, 0], "B": [0, 1]}))
    ours, clean = rows["ours"], rows["clean"]
    # A: photos 0 and 2 share member 0: (0,2) and (2,0) recognised -> 0 of 2; (1,0), (1,2) (no face) protected -> 2 of 2.
    # B: different members: (0,1) protected, (1,0) recognised -> 1 of 2. Pooled: same 0 of 2, other 3 of 4.
    assert ours["cloaked_gallery_same_member_top1_psr"] == 0.0
    assert ours["cloaked_gallery_other_member_top1_psr"] == pytest.approx(0.75, abs=1e-4)
    assert ours["cloaked_gallery_top1_psr"] == pytest.approx(3 / 6, abs=1e-4)  # the split adds up to the whole
    assert clean["cloaked_gallery_other_member_top1_psr"] is None  # no set, no split
    text = report(tmp_path, list(rows.values()))
    assert "| 50.0% (50.0–50.0) | 75.0% (" in text and "| 0.0% (0.0–0.0) | 25.0% (0.0–33.3) | 6 | 4 |" in text

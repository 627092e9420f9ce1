"""Leave-one-out benchmark: every recogniser attacks a mask learned from all the others (black-box by membership)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from facecloak.anchors import build_gallery
from facecloak.cli import build_parser
from facecloak.errors import BadOptionError
from facecloak.evaluate.cli import config_from_args
from facecloak.evaluate.protocol import QUICK, EvalConfig, leave_one_out, load_dataset
from facecloak.evaluate.report import leave_one_out_rows, write_report
from facecloak.evaluate.runner import run_eval
from facecloak.evaluate.summary import box, summarise
from facecloak.models import REGISTRY

MODELS = ("sface", "facenet", "ms1m")  # three recognisers: ensembles of two; sface+facenet stands in for the shipped default


def test_leave_one_out_config_never_puts_the_attacker_in_its_ensemble():
    cfg = leave_one_out(EvalConfig())
    assert cfg.targets == tuple(REGISTRY) and cfg.surrogates == () and cfg.methods == ("clean", "noise", "ours")
    assert cfg.budget_scales == () and len(cfg.ensembles) == len(REGISTRY)
    for attacker, members in zip(cfg.targets, cfg.ensembles):
        assert attacker not in members and set(members) | {attacker} == set(REGISTRY)
        assert box("+".join(members), attacker, ()) == "black-box"
    assert "facenet+ms1m+faceplugin+sirius" in {"+".join(e) for e in cfg.ensembles}
    # membership decides the box, for explicit ensembles and for the "ensemble" label alike
    assert box("sface+facenet", "facenet", ()) == "white-box" and box("sface+facenet", "ms1m", ()) == "black-box"
    assert box("ensemble", "sface", ("sface", "facenet")) == "white-box" and box("ensemble", "ms1m", ("sface", "facenet")) == "black-box"
    assert box("sface+ms1m", "facenet", (), models=("sface", "facenet")) == "white-box"  # recorded models win over the label
    assert box("-", "sface", ()) == "none"


def test_leave_one_out_cli_options():
    args = build_parser().parse_args(["eval", "--quick", "--leave-one-out", "--targets", "sface,ms1m,faceplugin",
                                      "--ensembles", "sface+facenet", "--balance"])
    cfg = config_from_args(args)
    assert (cfg.people, cfg.views, cfg.balance) == (QUICK.people, QUICK.views, True)
    assert cfg.ensembles == (("ms1m", "faceplugin"), ("sface", "faceplugin"), ("sface", "ms1m"), ("sface", "facenet"))
    assert cfg.surrogates == () and cfg.methods == ("clean", "noise", "ours")
    explicit = config_from_args(build_parser().parse_args(["eval", "--quick", "--leave-one-out", "--methods", "ours"]))
    assert explicit.methods == ("ours",) and explicit.targets == tuple(REGISTRY)
    assert replace(EvalConfig(), ensembles=()).fingerprint() == EvalConfig().fingerprint()  # old runs still resume
    assert replace(EvalConfig(), balance=True).fingerprint() != EvalConfig().fingerprint()
    with pytest.raises(BadOptionError, match="two or more distinct"):
        replace(EvalConfig(), ensembles=(("sface", "sface"),)).validate()
    with pytest.raises(BadOptionError, match="at least three"):
        leave_one_out(EvalConfig(), ("sface", "facenet"))


TINY = leave_one_out(replace(EvalConfig(), people=2, probes=2, gallery_people=3, distractors=20, anchor_split=20,
                             jpeg=(90,), views=2, iterations=2), MODELS)


@pytest.mark.slow
def test_quick_leave_one_out_rows_are_black_box_and_reported(tmp_path, monkeypatch):
    ds = load_dataset(TINY)
    anchors = build_gallery(sorted(ds.distractor_root.glob("*.jpg"))[: TINY.anchor_split], ds.distractor_root, MODELS)
    results = run_eval(TINY, tmp_path, anchors=anchors)
    matrix = leave_one_out_rows(results)
    assert [r["target"] for r in matrix] == list(MODELS)
    for r in matrix:  # the mask's own record of its surrogates, not just the label, keeps the attacker out
        assert r["box"] == "black-box" and r["target"] not in r["models"]
        assert r["models"] == [m for m in MODELS if m != r["target"]] and r["surrogate"] == "+".join(r["models"])
        assert r["probes"] == 4 and 0 <= r["top1_psr"] <= 1 and r["top1_psr_ci"][0] <= r["top1_psr"] <= r["top1_psr_ci"][1]
    assert not [r for r in results["rows"] if r["method"] == "ours" and len(r["models"]) < 2]  # no single-surrogate rows
    assert {r["box"] for r in results["rows"] if r["method"] == "ours"} == {"black-box", "white-box"}
    # The shipped default's section, with a shipped set this tiny run contains (the real one has three models).
    monkeypatch.setattr("facecloak.evaluate.report.DEFAULT_SURROGATES", ("sface", "facenet"))
    text = write_report(results, tmp_path).read_text()
    assert "## Leave-one-out: each recogniser attacks a mask learned from all the others" in text
    assert "| sface | facenet+ms1m | black-box |" in text and "| ms1m | sface+facenet | black-box |" in text
    loo = text.split("## Leave-one-out: each recogniser attacks")[1].split("\n## ")[0]  # with the cloaked-photo attacks
    assert "| clean (no cloak) | - | sface | none |" in loo and "| ours (full) | facenet+ms1m | sface | black-box |" in loo
    for r in matrix:
        assert 0 <= r["cloaked_gallery_top1_psr"] <= 1 and 0 <= r["linked"] <= 1 and r["person_pairs"] == [1, 1]
    section = text.split("## The shipped default (sface+facenet) vs every recogniser outside it")[1].split("##")[0]
    assert "| ms1m | sface+facenet | black-box |" in section and "| sface |" not in section
    assert "Not attacked in this run: faceplugin, sirius (evaluation only)." in section

    # Had a mask been learned with its attacker in the ensemble, its row would be white-box and leave the matrix.
    leaked = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()[1:]]
    for record in leaked:
        for v in record["variants"]:
            if v["surrogate"] == "facenet+ms1m":
                v["learned_from"] = ["facenet", "ms1m", "sface"]
    rows = summarise(leaked, TINY, {m: t["threshold"] for m, t in results["thresholds"].items()})
    (bad,) = [r for r in rows if r["surrogate"] == "facenet+ms1m" and r["target"] == "sface"]
    assert bad["box"] == "white-box"
    assert [r["target"] for r in leave_one_out_rows({**results, "rows": rows})] == ["facenet", "ms1m"]

"""End-to-end smoke of `facecloak eval` on 2 real LFW people with tiny settings (real models and photos)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from facecloak.anchors import build_gallery
from facecloak.evaluate.protocol import EvalConfig, load_dataset
from facecloak.evaluate.report import write_report
from facecloak.errors import BadOptionError
from facecloak.evaluate.runner import RECORDS, RESULTS, run_eval, shard_records_name
from facecloak.imageio import read_image
from facecloak.mask import member_for_photo
from facecloak.optimise.precision import native_bf16

pytestmark = pytest.mark.slow

TINY = replace(
    EvalConfig(), people=2, probes=2, gallery_people=3, distractors=20, anchor_split=20,
    surrogates=("facenet",), targets=("sface", "facenet"), methods=("clean", "noise", "centre_uniform", "pgd", "ours"),
    ensemble=False, jpeg=(90,), budget_scales=(), views=2, iterations=3,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    ds = load_dataset(TINY)
    anchor_files = sorted(ds.distractor_root.glob("*.jpg"))[: TINY.anchor_split]
    anchors = build_gallery(anchor_files, ds.distractor_root, TINY.surrogates)  # tiny: the cached 1,000 may be cold
    seen = []
    results = run_eval(TINY, out, anchors=anchors, on_person=lambda i, rec, variants: seen.append((i, variants)))
    return out, results, anchors, seen


def rows(results: dict, method: str, target: str) -> dict:
    (row,) = [r for r in results["rows"] if r["method"] == method and r["target"] == target]
    return row


def test_results_have_every_row_and_figure(run):
    out, results, _, seen = run
    assert results["schema"] == "facecloak-eval/1"
    assert json.loads((out / RESULTS).read_text())["rows"] == results["rows"]
    assert len(results["dataset"]["people"]) == 2 and [i for i, _ in seen] == [0, 1]
    assert {(r["method"], r["target"]) for r in results["rows"]} == {
        (m, t) for m in ("clean", "noise", "centre_uniform", "pgd", "ours") for t in ("sface", "facenet")}
    for r in results["rows"]:
        assert r["probes"] == 4 and r["jpeg"] == 90
        for key in ("top1_psr", "top5_psr", "verification_psr", "no_face"):
            assert 0.0 <= r[key] <= 1.0
        assert r["top5_psr"] <= r["top1_psr"]  # top-5 protection is the harder one
        assert 0 <= r["flip_mean"] <= r["flip_p99"] <= 1 and 0 <= r["flip_visible"] <= 1 and r["face_ssim"] <= r["ssim"]
    for model, t in results["thresholds"].items():
        assert -1 < t["threshold"] < 1 and t["impostor_pairs"] > 1000, model
    assert "torchvision" in results["lpips"]  # says why LPIPS is absent
    assert TINY.bf16_convolutions is None and results["config"]["bf16_convolutions"] is native_bf16()  # resolved, recorded


def test_clean_photos_are_recognised_and_per_image_pgd_protects(run):
    _, results, _, _ = run
    for target in ("sface", "facenet"):
        clean = rows(results, "clean", target)
        assert clean["top1_psr"] <= 0.25 and clean["ssim"] == 1.0 and clean["psnr"] is None
        assert (clean["face_ssim"], clean["flip_mean"], clean["flip_visible"]) == (1.0, 0.0, 0.0)
    pgd = rows(results, "pgd", "facenet")  # white-box upper reference
    assert pgd["box"] == "white-box" and pgd["top1_psr"] >= 0.75
    assert rows(results, "ours", "sface")["box"] == "black-box"
    uniform = rows(results, "centre_uniform", "facenet")  # OPOM's baseline: one flat budget, no focus regions
    assert (uniform["eps"], uniform["eps_focus"]) == (22, 22) and uniform["box"] == "white-box"
    for method in ("noise", "centre_uniform", "pgd", "ours"):  # the cloak is visible in the numbers but bounded
        row = rows(results, method, "facenet")
        assert 0.75 < row["ssim"] < 0.999
        assert row["face_ssim"] < row["ssim"] and 0.02 < row["flip_mean"] < 0.5  # on the face the cloak shows more
    # our focus budget (eps_A 32 on stickers) is visible where uniform noise at eps 8 is not
    assert rows(results, "ours", "facenet")["flip_visible"] > rows(results, "noise", "facenet")["flip_visible"]


def test_cloaked_gallery_attack_and_linkability_are_measured(run):
    _, results, _, _ = run
    for r in results["rows"]:  # 2 people x 2 probes: 2 ordered trials and 1 pair per person
        assert r["person_pairs"] == [1, 1] and all(0 <= n <= 2 for n in r["person_trials"]), r
        for key in ("cloaked_gallery_top1_psr", "linked"):
            low, high = r[f"{key}_ci"]
            assert 0.0 <= low <= r[key] <= high <= 1.0, (key, r)
    # Clean photos of one person verify as that person at FAR 1e-3 under SFace (LFW: nearly all clean pairs do),
    # and a clean gallery photo identifies the person's other clean photo: no protection.
    clean = rows(results, "clean", "sface")
    assert clean["linked"] >= 0.5 and clean["cloaked_gallery_top1_psr"] <= 0.5


def test_a_mask_set_records_which_member_cloaked_each_probe(run, tmp_path):
    _, _, anchors, _ = run
    cfg = replace(TINY, methods=("clean", "ours"), targets=("sface",), mask_set=2)
    results = run_eval(cfg, tmp_path, anchors=anchors)
    people = {p.name: p for p in load_dataset(cfg).people}
    for line in (tmp_path / RECORDS).read_text().splitlines()[1:]:
        record = json.loads(line)
        ours, = [v for v in record["variants"] if v["method"] == "ours"]
        photos = people[record["person"]].photos[1 : cfg.probes + 1]
        assert ours["members"] == [member_for_photo(read_image(p), 2) for p in photos]  # the rotation rule, per probe
        assert all("members" not in v for v in record["variants"] if v["method"] != "ours")
    ours = rows(results, "ours", "sface")
    split = [ours[f"cloaked_gallery_{k}_member_top1_psr"] for k in ("same", "other")]
    assert any(share is not None for share in split)  # every trial is in one half of the split
    assert rows(results, "clean", "sface")["cloaked_gallery_same_member_top1_psr"] is None


def test_report_and_resume(run):
    out, results, anchors, _ = run
    text = write_report(results, out).read_text()
    assert "| per-image PGD (reference) | facenet | facenet | white-box |" in text
    assert "| no face | face FLIP | face > 0.2 | face SSIM | SSIM | PSNR dB | probes |" in text
    assert "| clean-gallery top-1 PSR (95% CI) | cloaked-gallery top-1 PSR (95% CI) | other member | same member | linked pairs (95% CI) |" in text
    assert "| ours (full) | facenet | sface | black-box |" in text.split("## Cloaked-gallery attack and linkability")[1]
    assert (out / "psr_vs_jpeg.png").exists() is False  # one JPEG setting: no sweep plot
    seen = []
    again = run_eval(TINY, out, resume=True, anchors=anchors, on_person=lambda *a: seen.append(a), threads=2)
    assert seen == [] and again["rows"] == results["rows"]  # nothing recomputed, same figures
    assert again["environment"]["threads"] == results["environment"]["threads"] == 1  # what the records were made with
    assert len((out / RECORDS).read_text().splitlines()) == 3  # header + 2 people


def test_shards_split_people_and_merge_into_the_same_figures(run, tmp_path):
    out, results, anchors, _ = run
    header, *people = (out / RECORDS).read_text().splitlines()
    for k, record in enumerate(people):  # as if two shard processes had each finished their person
        (tmp_path / shard_records_name((k, 2))).write_text(header + "\n" + record + "\n")
    seen = []
    shard_run = run_eval(TINY, tmp_path, resume=True, anchors=anchors, shard=(0, 2), on_person=lambda *a: seen.append(a))
    assert shard_run is None and seen == []  # person 0 is recorded, person 1 belongs to the other shard
    merged = run_eval(TINY, tmp_path, resume=True, anchors=anchors, on_person=lambda *a: seen.append(a))
    assert seen == [] and merged["rows"] == results["rows"]
    with pytest.raises(BadOptionError, match="shard"):
        run_eval(TINY, tmp_path, resume=True, anchors=anchors, shard=(2, 2))


def test_our_method_can_run_on_the_compiled_step_of_facecloak_enroll(run, tmp_path, monkeypatch):
    """``backend="auto"``: the first ensemble's rows run on the AOT step (prepared into the cache), as users get them."""
    _, _, anchors, _ = run
    monkeypatch.setenv("FACECLOAK_CACHE", str(tmp_path / "cache"))
    cfg = replace(TINY, people=1, surrogates=("sface",), targets=("facenet",), methods=("clean", "ours"), backend="auto")
    said: list[str] = []
    results = run_eval(cfg, tmp_path / "run", anchors=anchors, log=said.append)
    assert "our method's PGD for sface: aot-cpu" in said
    assert list((tmp_path / "cache" / "aot").iterdir())  # compiled for this shape
    ours = rows(results, "ours", "facenet")
    assert results["config"]["backend"] == "auto" and ours["probes"] == 2 and ours["flip_mean"] > 0
    with pytest.raises(BadOptionError, match="backend must be one of"):
        replace(TINY, backend="gpu").validate()

"""Protocol, baselines and summary of the benchmark on small cases (tiny torch embedders, synthetic photos)."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image

from facecloak.anchors.gallery import identity_of
from facecloak.errors import BadOptionError
from facecloak.evaluate.baselines import centre_targets, noise_mask, per_image_masks
from facecloak.evaluate.cli import config_from_args
from facecloak.evaluate.report import _verdict, save_examples, save_visibility_grid, write_report
from facecloak.evaluate.protocol import QUICK, EvalConfig, load_dataset, person_seed, upload
from facecloak.evaluate.summary import box, summarise
from facecloak.faces import AlignedFrame
from facecloak.optimise import PGDConfig
from facecloak.optimise.torch_step import SurrogateTarget, cloak_loss
from facecloak.cli import build_parser


class TinyEmbedder(torch.nn.Module):
    """A fixed random linear embedder: stands in for a face model where only the maths is under test."""

    def __init__(self, size: int = 16, dim: int = 8) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * size * size, dim, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.proj(x.flatten(1)), dim=-1)


def test_config_validation_names_the_bad_option():
    with pytest.raises(BadOptionError, match="probes"):
        replace(EvalConfig(), probes=10).validate()
    with pytest.raises(BadOptionError, match="anchor source"):
        replace(EvalConfig(), anchor_source="mine").validate()
    with pytest.raises(BadOptionError, match="unknown methods"):
        replace(EvalConfig(), methods=("ours", "magic")).validate()
    with pytest.raises(BadOptionError, match="people"):
        replace(EvalConfig(), people=20, gallery_people=10).validate()
    with pytest.raises(BadOptionError, match="unknown face-recognition model"):
        replace(EvalConfig(), targets=("arcface9000",)).validate()


def test_fingerprint_ignores_people_but_not_settings():
    base = EvalConfig()
    assert replace(base, people=3).fingerprint() == base.fingerprint()  # runs can be extended/cut short
    assert replace(base, jpeg=(75,)).fingerprint() != base.fingerprint()
    assert person_seed(0, "A") == person_seed(0, "A") != person_seed(1, "A")


def test_float32_runs_resume_records_made_before_the_hardware_default():
    """A committed run from before bf16_convolutions followed the CPU (None then meant float32): explicit float32
    fingerprints as its records do, bfloat16 does not, so the two precisions never mix in one run."""
    import json
    from pathlib import Path

    run = Path(__file__).parent.parent / "docs/eval/transfer-ablation/A-session17/base"
    header = json.loads((run / "records.jsonl").read_text().splitlines()[0])
    recorded = json.loads((run / "results.json").read_text())["config"]

    def as_tuples(v: object) -> object:
        return tuple(as_tuples(x) for x in v) if isinstance(v, list) else v

    cfg = EvalConfig(**{k: as_tuples(v) for k, v in recorded.items()})
    assert recorded.get("bf16_convolutions") is None  # absent or None: float32 then
    assert replace(cfg, bf16_convolutions=False).fingerprint() == header["fingerprint"]
    assert replace(cfg, bf16_convolutions=True).fingerprint() != header["fingerprint"]


def test_cli_options_override_quick():
    args = build_parser().parse_args(["eval", "--quick", "--people", "2", "--eps", "4", "--surrogate", "facenet", "--jpeg", "75,0"])
    cfg = config_from_args(args)
    assert (cfg.people, cfg.surrogates, cfg.jpeg, cfg.views) == (2, ("facenet",), (75, 0), QUICK.views)
    assert cfg.eps == pytest.approx(4 / 255)
    with pytest.raises(BadOptionError):
        config_from_args(build_parser().parse_args(["eval", "--probes", "0"]))


def test_cli_shard_option_is_checked():
    assert build_parser().parse_args(["eval", "--shard", "1/3"]).shard == (1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["eval", "--shard", bad])


def test_dataset_split_keeps_anchors_and_attacker_distractors_disjoint():
    cfg = replace(EvalConfig(), people=3, gallery_people=5, distractors=40, anchor_split=30)
    ds = load_dataset(cfg)
    assert [p.name for p in ds.people] == [p.name for p in ds.gallery_people[:3]]
    assert all(len(p.photos) == 10 for p in ds.people)
    attacker = {identity_of(p, ds.distractor_root) for p in ds.attacker_distractors}
    assert len(attacker) == 40 and len(ds.anchor_names) == 30
    assert not attacker & set(ds.anchor_names)
    shared = load_dataset(replace(cfg, anchor_source="shared"))
    assert {identity_of(p, ds.distractor_root) for p in shared.attacker_distractors} <= set(shared.anchor_names)
    assert load_dataset(cfg).people == ds.people  # seeded choice


def test_upload_resizes_and_compresses():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    out = upload(photo, 0.5, 90)
    assert out.shape == (50, 40, 3) and out.dtype == np.uint8
    assert np.array_equal(upload(photo, 1.0, 0), photo)  # no resize, no JPEG: untouched
    assert not np.array_equal(upload(photo, 1.0, 50), photo)


def test_noise_mask_stays_inside_the_budget():
    budget = np.full((16, 16), 8 / 255, dtype=np.float32)
    budget[:, :8] = 0
    mask = noise_mask(budget, AlignedFrame(size=16), seed=3)
    assert np.all(mask.delta[:, :8] == 0)
    # Shipped through the file format: quantised to 2-level steps, at most one step past the budget.
    assert np.abs(mask.delta).max() <= 8 / 255 + 1 / 255 + 1e-6
    assert np.abs(mask.delta[:, 8:]).mean() > 2 / 255  # it is real noise, not zeros


def test_class_centre_loss_is_similarity_to_the_centre(monkeypatch):
    tiny = TinyEmbedder()
    monkeypatch.setattr("facecloak.evaluate.baselines.torch_embedder", lambda name: tiny)
    views = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    (target,) = centre_targets(["tiny"], views)
    centre = torch.nn.functional.normalize(tiny(views).mean(0), dim=0)
    assert torch.allclose(target.user, centre)
    emb = tiny(torch.rand(3, 3, 16, 16))
    assert torch.allclose(cloak_loss(emb, target, 1.0), (emb @ centre).mean(), atol=1e-6)


def test_per_image_pgd_gives_each_image_its_own_delta_within_its_budget():
    tiny = TinyEmbedder()
    gen = torch.Generator().manual_seed(2)
    crops = torch.rand(2, 3, 16, 16, generator=gen)
    user = tiny(crops[:1])[0].detach()
    near = torch.nn.functional.normalize(user + 0.5 * torch.randn(8, generator=gen), dim=0)
    budgets = np.stack([np.full((16, 16), 8 / 255, np.float32), np.zeros((16, 16), np.float32)])  # image 2 may not change
    cfg = PGDConfig(diversity_prob=0.0, attention=False)
    masks = per_image_masks(crops.numpy(), budgets, [SurrogateTarget(tiny, near, -user, user)], AlignedFrame(size=16), cfg,
                            eps=8 / 255, seed=0)
    assert len(masks) == 2 and masks[0].delta.shape == (16, 16, 3)
    assert np.abs(masks[0].delta).max() <= 9 / 255 + 1e-6 and np.abs(masks[0].delta).mean() > 4 / 255
    assert np.count_nonzero(masks[1].delta) == 0
    cloaked = (crops[:1] + torch.from_numpy(masks[0].delta).permute(2, 0, 1)).clamp(0, 1)
    with torch.no_grad():  # the attack moved image 1 away from the user's identity
        assert float(tiny(cloaked)[0] @ user) < float(tiny(crops[:1])[0] @ user) - 0.05


def test_summary_pools_people_and_labels_boxes():
    cfg = replace(EvalConfig(), surrogates=("sface", "facenet"), targets=("facenet",), jpeg=(90,))
    def variant(method, surrogate, ranks, genuine):
        return {"method": method, "surrogate": surrogate, "scale": 1.0, "ssim": [0.9] * len(ranks),
                "psnr": [30.0] * len(ranks), "attack": {"90": {"facenet": {"rank": ranks, "genuine": genuine}}}}
    records = [
        {"variants": [variant("ours", "sface", [0, 3], [[0.9], [0.1]]), variant("clean", "-", [0, 0], [[0.9], [0.8]])]},
        {"variants": [variant("ours", "sface", [-1, 9], [[-2.0], [0.2]]), variant("clean", "-", [0, 1], [[0.7], [0.6]])]},
    ]
    rows = {(r["method"], r["surrogate"]): r for r in summarise(records, cfg, {"facenet": 0.5})}
    ours = rows[("ours", "sface")]
    assert (ours["probes"], ours["top1_psr"], ours["top5_psr"], ours["verification_psr"]) == (4, 0.75, 0.5, 0.75)
    assert ours["box"] == "black-box" and ours["no_face"] == 0.25 and ours["eps_focus"] == 32
    clean = rows[("clean", "-")]
    assert (clean["top1_psr"], clean["verification_psr"], clean["box"], clean["eps"]) == (0.25, 0.0, "none", None)
    # per-person top-1 counts (a missed face counts as protected) and a people-bootstrap interval around the pooled PSR
    assert (ours["person_top1"], ours["person_probes"], clean["person_top1"]) == ([1, 2], [2, 2], [0, 1])
    assert ours["top1_psr_ci"][0] <= 0.75 <= ours["top1_psr_ci"][1] and clean["top1_psr_ci"] == [0.0, 0.5]
    assert box("ensemble", "facenet", cfg.surrogates) == "white-box"
    assert box("facenet", "facenet", cfg.surrogates) == "white-box"


def test_report_draws_budget_and_jpeg_plots(tmp_path):
    cfg = replace(EvalConfig(), surrogates=("sface",), targets=("sface", "facenet"), jpeg=(90, 50), budget_scales=(0.5,))
    def variant(method, surrogate, scale, rank):
        attack = {str(q): {t: {"rank": [rank, 0], "genuine": [[0.1], [0.9]]} for t in cfg.targets} for q in cfg.jpeg}
        flip = [0.0, 0.0] if method == "clean" else [0.05 * scale, 0.1 * scale]
        return {"method": method, "surrogate": surrogate, "scale": scale, "ssim": [0.9, 0.9], "psnr": [30.0, 31.0], "attack": attack,
                "flip_mean": flip}
    records = [{"variants": [variant("clean", "-", 1.0, 0), variant("noise", "-", 1.0, 0), variant("noise", "-", 0.5, 0),
                             variant("ours", "sface", 1.0, 7), variant("ours", "sface", 0.5, 0), variant("ours_bm", "sface", 1.0, 0),
                             variant("centre_uniform", "sface", 1.0, 0), variant("centre", "sface", 1.0, 7), variant("pgd", "sface", 1.0, 3)]}]
    rows = summarise(records, cfg, {"sface": 0.5, "facenet": 0.5})
    results = {
        "config": asdict(cfg), "rows": rows, "lpips": "not measured", "seconds": {"total": 60.0},
        "thresholds": {t: {"far": 1e-3, "threshold": 0.5, "impostor_pairs": 1000} for t in cfg.targets},
        "dataset": {"people": ["A"], "gallery": {"photos": 20, "identities": 12, "lfw_people": 2, "distractors": 10},
                    "anchors": {"identities": 500}},
    }
    save_examples([("clean", np.zeros((50, 40, 3), np.uint8)), ("ours", np.full((50, 40, 3), 255, np.uint8))], tmp_path / "examples.png")
    face = np.random.default_rng(0).integers(60, 200, (48, 40, 3), dtype=np.uint8)
    brighter = np.clip(face.astype(int) + 30, 0, 255).astype(np.uint8)
    save_visibility_grid([("A", face, {"cloaked": brighter}), ("B", face, {"cloaked": face})], tmp_path / "visibility_grid.png")
    save_visibility_grid([("A", face, {"x": brighter, "y": face})], tmp_path / "two.png")  # one column pair per cloak
    assert Image.open(tmp_path / "two.png").size[0] > 1.5 * Image.open(tmp_path / "visibility_grid.png").size[0]
    text = write_report(results, tmp_path).read_text()
    for png in ("psr_vs_budget.png", "psr_vs_jpeg.png", "psr_vs_flip.png", "examples.png", "visibility_grid.png"):
        assert f"]({png})" in text
        assert Image.open(tmp_path / png).size[0] > 100
    assert "| ours (full) | sface | facenet | black-box | 8/32 | 50.0% | 50.0% | 50.0% |" in text
    assert "## Upload JPEG 50 (resize x0.8)" in text and "## Other budgets" in text
    # the aim table: ours (50%) misses 80%, beats noise (0%) and the uniform class centre (0%), ties centre + focus (50%)
    assert ("| sface -> facenet | 50.0% (50.0–50.0) / 0.900 | NOT met | yes (+50.0 pts, 95% CI +50.0..+50.0, SSIM 0.900 vs 0.900) | "
            "yes (+50.0 pts, 95% CI +50.0..+50.0, SSIM 0.900 vs 0.900) | tie (+0.0 pts, 95% CI +0.0..+0.0, SSIM 0.900 vs 0.900) |") in text
    assert "| ours (full) | sface | facenet | black-box | 8/32 | 50.0% | 50.0–50.0 | 50.0% |" in text  # at a glance: with CI
    # a baseline judged at its largest budget; when even that is less visible than ours, no verdict
    ours_row = {"top1_psr": 0.8, "ssim": 0.90}
    assert _verdict(ours_row, [{"top1_psr": 0.01, "ssim": 0.95}, {"top1_psr": 0.02, "ssim": 0.92}]) == (
        "+78.0 pts at lower SSIM (SSIM 0.900 vs 0.920, its largest budget tested)")
    assert _verdict(ours_row, [{"top1_psr": 0.5, "ssim": 0.89}]) == "yes (+30.0 pts, SSIM 0.900 vs 0.890)"
    assert _verdict(ours_row, []) == "–"
    assert "**sface -> facenet: 50.0% < 80%.** Per-image PGD from the same surrogate and budget reaches 50.0%" in text


def test_perceptual_runs_enroll_our_method_with_the_rows_eps_a_as_the_perceptual_budget():
    from types import SimpleNamespace

    from facecloak.evaluate.harness import Harness

    cfg = config_from_args(build_parser().parse_args(["eval", "--quick", "--perceptual"]))
    assert cfg.perceptual and cfg.fingerprint() != replace(cfg, perceptual=False).fingerprint()
    for scale in (1.0, 0.5):
        enroll = Harness.enroll_config(SimpleNamespace(cfg=cfg), ("sface",), 0, scale)
        assert enroll.perceptual is not None and enroll.perceptual.eps == pytest.approx(cfg.eps_focus * scale)
    plain = Harness.enroll_config(SimpleNamespace(cfg=replace(cfg, perceptual=False)), ("sface",), 0)
    assert plain.perceptual is None


def test_transfer_options_reach_our_enrollment_and_the_report():
    from types import SimpleNamespace

    from facecloak.evaluate.harness import Harness
    from facecloak.evaluate.report import transfer_label
    from facecloak.optimise import PGDConfig

    args = ["eval", "--quick", "--eot-rotation", "10", "--eot-jpeg", "75", "--skip-gradient", "0.5", "--visibility-weight", "2",
            "--eot-spectrum", "0.5", "--gradient-blur", "1.5"]
    cfg = config_from_args(build_parser().parse_args(args))
    plain = replace(cfg, eot_rotation=None, eot_jpeg=None, skip_gradient=None, visibility_weight=None, eot_spectrum=None,
                    gradient_blur=None)
    assert cfg.fingerprint() != plain.fingerprint()
    assert plain.fingerprint() == config_from_args(build_parser().parse_args(["eval", "--quick"])).fingerprint()
    pgd = Harness.enroll_config(SimpleNamespace(cfg=cfg), ("sface",), 0).pgd
    assert (pgd.diversity_rotation, pgd.upload_jpeg, pgd.skip_gradient, pgd.visibility_weight, pgd.spectrum_rho, pgd.grad_sigma) == (
        10, 75, 0.5, 2, 0.5, 1.5)
    default, core = Harness.enroll_config(SimpleNamespace(cfg=plain), ("sface",), 0).pgd, PGDConfig()
    assert (default.diversity_rotation, default.upload_jpeg, default.skip_gradient, default.visibility_weight, default.grad_sigma) == (
        core.diversity_rotation, core.upload_jpeg, core.skip_gradient, core.visibility_weight, core.grad_sigma)
    label = transfer_label(asdict(cfg))
    assert "10 degrees" in label and "quality 75" in label and "skip gradient 0.5" in label
    assert "visibility penalty weight 2" in label and "spectrum simulation rho 0.5" in label
    assert "gradient blur sigma 1.5 px" in label
    assert transfer_label(asdict(plain)) == ""


def test_recorded_threads_name_what_the_records_were_computed_with():
    from facecloak.evaluate.runner import recorded_threads

    assert recorded_threads([{"threads": 2}, {"threads": 2}]) == 2
    assert recorded_threads([{"threads": 1}, {"threads": 2}]) == "1-2"
    assert recorded_threads([{"threads": 1}, {}]) == "1, unknown"
    assert recorded_threads([{}]) == "unknown"


def test_the_backend_option_reaches_the_run_and_old_runs_keep_their_fingerprint():
    from facecloak.cli import build_parser

    assert config_from_args(build_parser().parse_args(["eval", "--backend", "auto"])).backend == "auto"
    assert config_from_args(build_parser().parse_args(["eval"])).backend == "torch-cpu"
    assert replace(EvalConfig(), backend="torch-cpu").fingerprint() == EvalConfig().fingerprint()
    assert replace(EvalConfig(), backend="auto").fingerprint() != EvalConfig().fingerprint()

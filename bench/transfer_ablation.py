"""Transfer techniques against recognisers outside the ensemble (issue 12), side by side in one run.

One benchmark run (``facecloak eval``'s protocol: held-out photos, re-detection, resize 0.8 + JPEG 90,
the attacker's clean gallery, people-bootstrap intervals) per variant of our method, in one process so
the attacker's gallery is embedded once; each writes its records, results and report under OUT/VARIANT.
Every target must be outside the ensemble (black-box only). Printed per target and variant: top-1 PSR
with its 95 % interval, the face-region visibility (FLIP mean, share of face pixels > 0.2, face SSIM),
full-photo SSIM, the enrollment seconds per person (learning the mask + applying it to the probes), and
the gap to the first variant on the same probes with its paired people-bootstrap 95 % interval (on the
people both runs hold: a run extended with more people keeps the seeded order).

Variants (``--variants``, comma-separated; settings within one joined by "+"):
``base`` the core's default; ``rotate:DEG`` alignment EOT (PGDConfig.diversity_rotation);
``jpeg:Q`` upload EOT (PGDConfig.upload_jpeg); ``sgm:GAMMA`` skip-gradient model augmentation
(PGDConfig.skip_gradient); ``ssa:RHO`` spectrum simulation (PGDConfig.spectrum_rho); ``ti:SIGMA`` gradient blur in px (TI-FGSM,
PGDConfig.grad_sigma); ``balance`` per-surrogate gradient balancing; ``bf16`` the surrogates in bfloat16 (PGDConfig.bf16_surrogates); ``bf16conv`` convolutions on bfloat16 arithmetic, ``bf16conv:off`` in float32 (PGDConfig.bf16_convolutions; ``base`` follows
the CPU: bfloat16 where it has bfloat16 units); ``vis:W`` the visibility penalty
(PGDConfig.visibility_weight, issue 13); ``eps:N`` / ``epsa:N`` the budget in grey levels (base / focus:
``eps:4+epsa:16`` is the subtle preset); ``iters:N`` PGD steps (PGDConfig.iterations); ``views:N`` augmented
views per step (EnrollConfig.views).

    python bench/transfer_ablation.py -o /tmp/ablation --ensemble sface,ms1m,faceplugin --targets facenet,sirius \\
        --variants base,rotate:10,jpeg:75,rotate:10+jpeg:75 --people 8 --probes 4
    python bench/transfer_ablation.py -o /tmp/ablation-quick --quick     # 2 people, tiny settings (a smoke run)
    python bench/transfer_ablation.py -o /tmp/ablation --report-only --time 3 ...  # the table again + enrollment times
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from facecloak.evaluate.cli import add_comparison_options, comparison_config
from facecloak.evaluate.protocol import EvalConfig
from facecloak.evaluate.report import paired_gap, with_interval, write_report
from facecloak.evaluate.runner import RESULTS, run_eval
from facecloak.models.weights import flush_subnormals


def _grey(value: str) -> float:
    return float(value) / 255


def _switch(value: str) -> bool:
    """``on``/``1`` or ``off``/``0`` (``bf16conv:off``: float32 convolutions where the default would take bfloat16)."""
    words = {"on": True, "1": True, "off": False, "0": False}
    if value not in words:
        raise SystemExit(f"expected on or off, got {value!r}")
    return words[value]


# Each variant setting: (EvalConfig field, the EnrollConfig part and field it sets, how its value is parsed)
SETTINGS = {"rotate": ("eot_rotation", "pgd.diversity_rotation", float), "jpeg": ("eot_jpeg", "pgd.upload_jpeg", int),
            "sgm": ("skip_gradient", "pgd.skip_gradient", float), "balance": ("balance", "pgd.balance_surrogates", _switch),
            "vis": ("visibility_weight", "pgd.visibility_weight", float), "ssa": ("eot_spectrum", "pgd.spectrum_rho", float),
            "ti": ("gradient_blur", "pgd.grad_sigma", float), "bf16": ("bf16_surrogates", "pgd.bf16_surrogates", _switch),
            "bf16conv": ("bf16_convolutions", "pgd.bf16_convolutions", _switch),
            "eps": ("eps", "budget.eps", _grey), "epsa": ("eps_focus", "budget.eps_focus", _grey),
            "iters": ("iterations", "pgd.iterations", int), "views": ("views", "views", int)}


def variant_settings(spec: str) -> dict[str, tuple[str, object]]:
    """``rotate:10+jpeg:75`` -> {EvalConfig field: ("part.field" of EnrollConfig, value)}; ``base`` -> {}."""
    out = {}
    for part in spec.split("+"):
        kind, *values = part.split(":")
        if kind == "base":
            continue
        if kind not in SETTINGS:
            raise SystemExit(f"unknown variant setting {part!r} (base, rotate:DEG, jpeg:Q, sgm:GAMMA, ssa:RHO, ti:SIGMA, balance, bf16, bf16conv[:off], "
                             "vis:W, eps:N, epsa:N, iters:N, views:N)")
        field, pgd_field, parse = SETTINGS[kind]
        out[field] = (pgd_field, parse(values[0]) if values else True)
    return out


def variant_config(spec: str, base: EvalConfig) -> EvalConfig:
    return replace(base, **{k: v for k, (_, v) in variant_settings(spec).items()})


def with_setting(config, path: str, value: object):  # noqa: ANN001, ANN201 - any frozen dataclass
    """``config`` with the field at dotted ``path`` ("views", "pgd.iterations") replaced by ``value``."""
    head, _, rest = path.partition(".")
    return replace(config, **{head: with_setting(getattr(config, head), rest, value) if rest else value})


def time_variants(variants: list[str], ensemble: tuple[str, ...], repeats: int) -> None:
    """Median seconds of ``repeats`` whole enrollments per variant (PyTorch eager, one LFW photo), side by side."""
    from facecloak.assemble import EnrollerSpec, build_enroller
    from facecloak.assets import assets_dir
    from facecloak.enroll import EnrollConfig
    from facecloak.imageio import read_image

    image = read_image(assets_dir() / "faces/lfw/Tony_Blair/Tony_Blair_0001.jpg")
    enroller = build_enroller(EnrollerSpec(backend="torch-cpu", surrogates=ensemble, view_backend="augment")).enroller
    print(f"\nenrollment time, {'+'.join(ensemble)}, PyTorch eager, median of {repeats} (load at start: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + ")")
    first = None
    for variant in variants:
        config = EnrollConfig(surrogates=ensemble)
        for target, value in variant_settings(variant).values():
            config = with_setting(config, target, value)
        enroller.enroll(image, config)  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            enroller.enroll(image, config)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        first = first or median
        print(f"  {variant:24s} {median:6.1f} s  x{median / first:.2f}")


def print_table(results: dict[str, dict], targets: tuple[str, ...], ensemble: tuple[str, ...], args: argparse.Namespace) -> None:
    label = "+".join(ensemble)
    print(f"\nup to {args.people} people x {args.probes} probes, ours = {label}, JPEG 90 + resize 0.8, black-box targets only")
    print(f"{'target':9s} {'variant':20s} {'top-1 PSR (95% CI)':>23s} {'face FLIP':>9s} {'face>0.2':>8s} "
          f"{'faceSSIM':>8s} {'SSIM':>6s} {'enroll s':>8s} {'people':>6s}  gap to {next(iter(results))} (paired 95% CI)")
    for target in targets:
        first = None
        for variant, res in results.items():
            row = next(r for r in res["rows"] if r["target"] == target and r["jpeg"] == 90 and r["method"] == "ours")
            first = first or row
            seconds = statistics.median(v[f"ours/{label}"] for v in res["seconds"]["per_person"].values())
            # Runs extended to more people keep the seeded order, so the shorter run's people are a prefix.
            common = min(len(row["person_top1"]), len(first["person_top1"]))
            gap = paired_gap(*({**r, "person_top1": r["person_top1"][:common], "person_probes": r["person_probes"][:common]}
                               for r in (row, first)))
            gap_text = "-" if row is first or gap is None else (
                f"{100 * gap.value:+5.1f} ({100 * gap.low:+.1f}..{100 * gap.high:+.1f})")
            print(f"{target:9s} {variant:20s} {with_interval(row, 'top1_psr'):>23s} {row['flip_mean']:9.3f} "
                  f"{100 * row['flip_visible']:7.1f}% {row['face_ssim']:8.3f} {row['ssim']:6.3f} {seconds:8.1f} {len(row['person_top1']):6d}  {gap_text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="base,rotate:10,jpeg:75,rotate:10+jpeg:75")
    add_comparison_options(parser, ensemble="sface,ms1m,faceplugin", targets="facenet,sirius")
    parser.add_argument("--report-only", action="store_true", help="print the table from OUTPUT/VARIANT/results.json")
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="then time N enrollments per variant (median; run it on a quiet machine)")
    parser.add_argument("--quick", action="store_true", help="2 people x 2 probes, 4 views x 2 iterations, 60 distractors")
    args = parser.parse_args()
    if args.quick:
        args.people, args.probes, args.views, args.iterations, args.distractors = 2, 2, 4, 2, 60
    base = comparison_config(args, args.quick)
    ensemble, targets = base.ensembles[0], base.targets
    if set(ensemble) & set(targets):
        raise SystemExit(f"targets {sorted(set(ensemble) & set(targets))} are in the ensemble: only black-box rows count")
    flush_subnormals()  # as `facecloak eval` does, before any worker thread exists
    print("load at start:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    results = {}
    for variant in args.variants.split(","):
        out = Path(args.output) / variant.replace(":", "").replace("+", "_")
        if args.report_only:
            results[variant] = json.loads((out / RESULTS).read_text())
            continue
        results[variant] = run_eval(variant_config(variant, base), out, resume=True, log=lambda m: print(m, flush=True),
                                    threads=args.threads)
        write_report(results[variant], out, title=f"Transfer ablation: {variant}")
    print_table(results, targets, ensemble, args)
    if args.time:
        time_variants(list(results), ensemble, args.time)
    print("load at end:", ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()

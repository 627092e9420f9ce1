"""Visibility against protection for the cloak's visibility settings (issue 13), side by side in one run.

Variants (``--variants``, comma-separated; settings within one joined by "+"):
``chroma:R`` the luminance-first budget (PGDConfig.chroma_ratio = R); ``vis:W`` the visibility penalty
(PGDConfig.visibility_weight = W, optimise.csf); ``perceptual:EPS:FLOOR[:CONTRAST]`` the apply-time
perceptual budget (EnrollConfig.perceptual: EPS grey levels on textured face pixels, FLOOR of it on flat
ones; optimise.perceptual); the budget map's shape: ``eps:N`` / ``epsa:N`` grey levels (base / focus),
``mu:X`` the high-pass threshold, ``stickers:0|1``. ``chroma:1`` is today's default.

Per person (LFW, the benchmark's seeded order, people 5.. by default: not the first 5 test people) one
mask is learned from photo 1 by the core's enrollment (its default ensemble, torch backend) for
each variant, then applied with ``facecloak.apply`` to photos 2-4 at full resolution. Printed
side by side, one row per variant: what people see (``measure_quality`` on the photo: face-box FLIP
mean / share > 0.2, face SSIM, full SSIM) and what recognisers outside the ensemble do (default facenet,
sirius: cosine of the re-detected, aligned cloaked probe to the clean enrollment photo, and the share
of probes below the card's match_threshold = protected). ``clean`` is the same with no cloak.
``psr/flip`` is (protected share - clean's) / face FLIP mean, averaged over the black-box models.
It is a screen (cosine and threshold, no gallery); `bench/transfer_ablation.py` gives the benchmark's
top-1 PSR with intervals.

    FACECLOAK_BACKEND=torch-cpu python bench/visibility_tradeoff.py --people 5:13 --jpeg 90 --threads 1 \
        --variants chroma:1,vis:0.5,vis:1,vis:2
    python bench/visibility_tradeoff.py --variants chroma:1,eps:12+epsa:12,stickers:0+mu:2+epsa:64

Measured 2026-12-01 (default ensemble sface+ms1m+faceplugin, 8 views x 10 iterations, JPEG 90, one thread
per process, two or three processes on the 2 cores, load 2-3; people 5:13, 3 probes each; figures
are per probe, not timings). Budget shapes, 8 people (24 probes):

                 variant flipMean flip>0.2 faceSSIM    SSIM cos_facenet prot_facenet  cos_sirius prot_sirius        dcos
                chroma:1   0.1804    36.7%   0.7217  0.9024       0.058  100.0±  0%      -0.059  100.0±  0%  0.740±0.040
          eps:12+epsa:12   0.1475    32.8%   0.8172  0.9315       0.405   95.8±  4%       0.329   66.7± 10%  0.372±0.029
 stickers:0+mu:2+epsa:48   0.1362    16.9%   0.8308  0.9374       0.415   87.5±  7%       0.313   75.0±  9%  0.375±0.032
 stickers:0+mu:2+epsa:64   0.1439    18.7%   0.8081  0.9297       0.355   91.7±  6%       0.264   87.5±  7%  0.430±0.034
stickers:0+mu:2.5+epsa:64  0.1302    13.3%   0.8453  0.9427       0.452   87.5±  7%       0.367   75.0±  9%  0.330±0.026

The visibility penalty, first 6 of the same people (18 probes; chroma:1 on the same 6: 0.1786, 36.1 %,
dcos 0.703, 100 / 100 % protected):

                 variant flipMean flip>0.2 faceSSIM    SSIM cos_facenet prot_facenet  cos_sirius prot_sirius        dcos
                 vis:0.5   0.1458    25.9%   0.7346  0.9087       0.156  100.0±  0%       0.004  100.0±  0%  0.654±0.051
                   vis:1   0.1313    21.0%   0.7540  0.9167       0.192  100.0±  0%       0.079  100.0±  0%  0.598±0.052
                   vis:2   0.1189    16.7%   0.7829  0.9278       0.261  100.0±  0%       0.188   94.4±  5%  0.509±0.048

and the first 2 (6 probes; chroma:1 on them: 0.1666, 34.0 %, dcos 0.713):

                   vis:4   0.0972    10.3%   0.8168  0.9429       0.301   83.3± 15%       0.370   83.3± 15%  0.410±0.076
                   vis:8   0.0884     7.6%   0.8543  0.9541       0.432   83.3± 15%       0.530   16.7± 15%  0.265±0.065
           vis:4+epsa:48   0.1197    18.8%   0.7480  0.9213       0.182  100.0±  0%       0.190  100.0±  0%  0.560±0.087
    vis:8+eps:12+epsa:48   0.0948     9.4%   0.8135  0.9408       0.379   83.3± 15%       0.470   33.3± 19%  0.322±0.066

At equal visible share the penalty keeps far more of the cloak's effect than any budget shape (16.7 %
visible: cosine drop 0.51 with vis:2 against 0.33-0.43 for the sparse focus maps at 13-19 %), because it
removes what the eye sees and keeps what the recognisers need instead of removing amplitude by region.
A bigger budget under the penalty buys nothing (vis:4 + eps_A 48 sits where vis:1 does).

The earlier chroma-only run (rows labelled by the ratio):

Measured 2026-11-30 (2 shared cores, load average 6-12 from other jobs; the project's quick setting
``--views 4 --iterations 5`` to fit; people 5:12 = 7 people x 3 probes = 21 probes, no JPEG):

     chroma flipMean flip>0.2 faceSSIM    SSIM  cos_ms1m  prot_ms1m  cos_sirius prot_sirius psr/flip         dcos
      clean   0.0000     0.0%   1.0000  1.0000     0.695   0.0      %     0.754    0.0      %        -            -
          1   0.1631    31.4%   0.7441  0.9095     0.177  85.7 ±  8%     0.206   95.2 ±  5%     5.55  0.533±0.035
        0.5   0.1422    25.6%   0.7606  0.9159     0.209  85.7 ±  8%     0.282   85.7 ±  8%     6.03  0.479±0.034
       0.25   0.1320    22.4%   0.7705  0.9196     0.227  81.0 ±  9%     0.291   81.0 ±  9%     6.13  0.466±0.033
          0   0.1208    19.2%   0.7743  0.9209     0.280  71.4 ± 10%     0.368   71.4 ± 10%     5.91  0.401±0.029

Paired against chroma 1 on the same probes, the black-box cosine rises by 0.054 +- 0.011 (0.5),
0.067 +- 0.013 (0.25), 0.132 +- 0.014 (0): a real protection loss, so the default stays 1.0 although
protection per unit FLIP is best at 0.25. ``--grad-sigma 1`` (TI smoothing) made masks more visible
(face FLIP +0.019 at chroma 1, +0.011 at 0.25) with no protection gain (cosine +0.011 +- 0.012 at 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import replace

import numpy as np
import torch

from facecloak.anchors import AnchorGallery
from facecloak.apply import apply_mask_with_landmarks, measure_quality
from facecloak.enroll import EnrollConfig, Enroller
from facecloak.errors import FaceCloakError
from facecloak.evaluate.protocol import EvalConfig, anchor_gallery, load_dataset, person_seed, upload
from facecloak.faces import FaceDetector, align_largest_face, to_chw_float
from facecloak.imageio import read_image
from facecloak.models import get_card, ort_embedder
from facecloak.optimise import PGDConfig
from facecloak.optimise.perceptual import PerceptualBudget


# Budget-map settings (BudgetConfig field, how the value is parsed): grey levels on the 0..255 scale,
# the high-pass threshold, stickers on (1) or off (0).
BUDGET_SETTINGS = {"eps": ("eps", lambda v: float(v) / 255), "epsa": ("eps_focus", lambda v: float(v) / 255),
                   "mu": ("highpass_mu", float), "stickers": ("stickers", lambda v: bool(int(v)))}


def variant_config(spec: str, base: EnrollConfig, pgd: PGDConfig) -> EnrollConfig:
    """``chroma:R+perceptual:EPS:FLOOR[:CONTRAST]`` -> the enrollment settings it names."""
    config = replace(base, pgd=pgd)
    for part in spec.split("+"):
        kind, *values = part.split(":")
        if kind == "chroma":
            config = replace(config, pgd=replace(config.pgd, chroma_ratio=float(values[0])))
        elif kind == "vis":
            config = replace(config, pgd=replace(config.pgd, visibility_weight=float(values[0])))
        elif kind in BUDGET_SETTINGS:
            field, parse = BUDGET_SETTINGS[kind]
            config = replace(config, budget=replace(config.budget, **{field: parse(values[0])}))
        elif kind == "perceptual":
            extra = {"contrast": float(values[2])} if len(values) > 2 else {}
            config = replace(config, perceptual=PerceptualBudget(eps=float(values[0]) / 255, floor=float(values[1]), **extra))
        else:
            raise SystemExit(f"unknown variant setting {part!r} (chroma:R, perceptual:EPS:FLOOR[:CONTRAST], "
                             f"{', '.join(k + ':V' for k in BUDGET_SETTINGS)})")
    return config


def table(rows: dict[str, list[dict]], targets: list[str], thresholds: dict[str, float], args: argparse.Namespace,
          pgd: PGDConfig, base: EnrollConfig, elapsed: float) -> None:
    """The side-by-side rows, one per variant (printed after every person, so a cut-short run still reports)."""
    n_people = len({r["person"] for r in rows["clean"]})
    print(f"\n{n_people} people x {args.probes} probes ({len(rows['clean'])} scored), jpeg {args.jpeg or 'none'}, "
          f"{base.views} views, {pgd.iterations} iterations, grad_sigma {pgd.grad_sigma:g}, {elapsed:.0f} s")
    head = f"{'variant':>24} {'flipMean':>8} {'flip>0.2':>8} {'faceSSIM':>8} {'SSIM':>7}"
    for t in targets:
        head += f" {'cos_' + t:>11} {'prot_' + t:>11}"
    print(head + f" {'psr/flip':>8} {'dcos':>11}")
    clean_prot = {t: np.mean([row[f"cos_{t}"] < thresholds[t] for row in rows["clean"]]) for t in targets}
    for label, recs in rows.items():
        if not recs:
            continue
        mean = {k: float(np.mean([r[k] for r in recs])) for k in recs[0] if k != "person"}
        line = f"{label:>24} {mean['flip_mean']:8.4f} {100 * mean['flip_visible']:7.1f}% {mean['face_ssim']:8.4f} {mean['ssim']:7.4f}"
        gains = []
        for t in targets:
            prot = float(np.mean([r[f"cos_{t}"] < thresholds[t] for r in recs]))
            se = np.sqrt(prot * (1 - prot) / len(recs))
            gains.append(prot - clean_prot[t])
            line += f" {mean[f'cos_{t}']:11.3f} {100 * prot:6.1f}±{100 * se:3.0f}%"
        if label == "clean":
            print(line + f" {'-':>8} {'-':>11}")
            continue
        # paired: each probe's similarity drop from its clean self, averaged over the black-box models
        drop = np.array([np.mean([c[f"cos_{t}"] - r[f"cos_{t}"] for t in targets]) for c, r in zip(rows["clean"], recs)])
        line += f" {np.mean(gains) / max(mean['flip_mean'], 1e-9):8.2f} {drop.mean():6.3f}±{drop.std(ddof=1) / np.sqrt(len(drop)) if len(drop) > 1 else 0:.3f}"
        print(line)
    print("prot: share of probes below the card's match_threshold (" + ", ".join(f"{t} {v:g}" for t, v in thresholds.items())
          + "); ± one binomial standard error; dcos: mean paired drop of the cosine to the clean enrollment photo ± SE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", default="5:13", help="START:STOP slice of the benchmark's people order")
    parser.add_argument("--probes", type=int, default=3, help="held-out photos per person (photos 2..)")
    parser.add_argument("--variants", default="chroma:1,perceptual:32:0.25,perceptual:24:0.25",
                        help="comma-separated variants (see above); chroma:1 is today's default")
    parser.add_argument("--targets", default="facenet,sirius", help="black-box recognisers (not in the ensemble)")
    parser.add_argument("--iterations", type=int, default=0, help="PGD iterations (0: the core's default)")
    parser.add_argument("--views", type=int, default=0, help="enrollment views (0: the core's default)")
    parser.add_argument("--grad-sigma", type=float, default=None, help="override PGDConfig.grad_sigma")
    parser.add_argument("--jpeg", type=int, default=0, help="JPEG quality of the upload before the attacker sees it (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write per-probe records as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
          f"| backend {os.environ.get('FACECLOAK_BACKEND', 'torch (default)')}, threads {args.threads}")
    start, stop = (int(v) for v in args.people.split(":"))
    variants = args.variants.split(",")
    targets = args.targets.split(",")
    base = EnrollConfig(check_views=0)
    if white_box := set(targets) & set(base.surrogates):
        raise SystemExit(f"targets {sorted(white_box)} are in the ensemble {base.surrogates}: not a black-box figure")
    if args.views:
        base = replace(base, views=args.views)
    pgd = base.pgd if not args.iterations else replace(base.pgd, iterations=args.iterations)
    if args.grad_sigma is not None:
        pgd = replace(pgd, grad_sigma=args.grad_sigma)
    dataset = load_dataset(EvalConfig())
    detector = FaceDetector()
    gallery: AnchorGallery = anchor_gallery(base.surrogates, dataset.anchor_names)  # the benchmark's anchor split
    enroller = Enroller(detector=detector, gallery=gallery)
    embed = {t: ort_embedder(t) for t in targets}
    thresholds = {t: get_card(t).match_threshold for t in targets}
    configs = {v: variant_config(v, base, pgd) for v in variants}
    rows: dict[str, list[dict]] = {"clean": [], **{v: [] for v in variants}}
    started = time.perf_counter()
    for person in dataset.people[start:stop]:
        enrollment = read_image(person.photos[0])
        clean_face = to_chw_float(align_largest_face(detector, enrollment, base.frame).crop)
        reference = {t: embed[t](clean_face)[0] for t in targets}
        probes = [read_image(p) for p in person.photos[1 : args.probes + 1]]
        faces = []
        for photo in probes:
            try:
                faces.append(align_largest_face(detector, photo, base.frame).face)
            except FaceCloakError:
                faces.append(None)

        def score(label: str, photos: list[np.ndarray]) -> None:
            for photo, clean, face in zip(photos, probes, faces):
                if face is None:
                    continue
                q = measure_quality(clean, photo, face.box)
                seen = upload(photo, 1.0, args.jpeg) if args.jpeg else photo
                try:  # the attacker's own detection of the (cloaked) upload
                    crop = to_chw_float(align_largest_face(detector, seen, base.frame).crop)
                    cos = {t: float(embed[t](crop)[0] @ reference[t]) for t in targets}
                except FaceCloakError:
                    cos = {t: -1.0 for t in targets}  # no face found: protected
                rows[label].append({"person": person.name, "flip_mean": q.flip_mean, "flip_visible": q.flip_visible,
                                    "face_ssim": q.face_ssim, "ssim": q.ssim, **{f"cos_{t}": c for t, c in cos.items()}})

        score("clean", probes)
        seed = person_seed(0, person.name)
        for label, config in configs.items():
            t0 = time.perf_counter()
            result = enroller.enroll(enrollment, replace(config, seed=seed))
            cloaked = [photo if face is None else apply_mask_with_landmarks(photo, result.mask, face.landmarks)
                       for photo, face in zip(probes, faces)]
            score(label, cloaked)
            print(f"  {person.name} {label}: enrolled in {time.perf_counter() - t0:.1f} s "
                  f"({', '.join(f'{k} {v:.0f}' for k, v in result.timings.items())})", flush=True)
        table(rows, targets, thresholds, args, pgd, base, time.perf_counter() - started)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()

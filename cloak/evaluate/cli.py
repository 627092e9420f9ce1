"""``facecloak eval``: run the protection benchmark and write results.json + report.md + plots."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

from ..backend_names import BACKENDS
from ..errors import BadOptionError


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _ensembles(value: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(m.strip() for m in e.split("+") if m.strip()) for e in _names(value))


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _names(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in _names(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def _shard(value: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 0/2), got {value!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard K/N needs 0 <= K < N, got {value!r}")
    return index, count


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``eval`` on the main ``facecloak`` parser (the heavy imports happen only when it runs)."""
    p = sub.add_parser("eval", help="protection benchmark on LFW (PSR top-1/top-5, verification, SSIM/PSNR)",
                       description="Held-out-photo protection benchmark; docs/eval.md describes the protocol and JSON.")
    p.add_argument("-o", "--output", default="eval-out", help="folder for records.jsonl, results.json, report.md, PNGs")
    p.add_argument("--quick", action="store_true", help="small CI setting (a few minutes); other options override it")
    p.add_argument("--people", type=int, help="people to cloak (default 100)")
    p.add_argument("--probes", type=int, help="held-out photos per person, 1..9 (default 9)")
    p.add_argument("--gallery-people", type=int, help="LFW people in the attacker's gallery (default 100)")
    p.add_argument("--distractors", type=int, help="distractor identities in the attacker's gallery (default 500)")
    p.add_argument("--anchors", dest="anchor_source", choices=("split", "shared"),
                   help="split: anchors disjoint from the attacker's distractors (default); shared: inflated setting")
    p.add_argument("--surrogates", "--surrogate", type=_names, help="comma-separated surrogate models (default sface,facenet)")
    p.add_argument("--targets", "--target", type=_names, help="comma-separated attacker models (default sface,facenet)")
    p.add_argument("--no-ensemble", dest="ensemble", action="store_false", default=None,
                   help="skip our method against all surrogates at once")
    p.add_argument("--ensembles", type=_ensembles,
                   help="comma-separated ensembles, members joined by '+' (e.g. sface+facenet,sface+ms1m+faceplugin): "
                   "our full method learned from each; a target is black-box for an ensemble it is not a member of "
                   "(without --surrogates: no single-surrogate rows)")
    p.add_argument("--leave-one-out", action="store_true",
                   help="every target (default: all registered recognisers) attacks a mask learned from all the others; "
                   "methods clean,noise,ours, no single-surrogate rows (options given explicitly still apply; "
                   "--ensembles adds ensembles)")
    p.add_argument("--balance", action="store_true", default=None,
                   help="per-surrogate gradient balancing (PGDConfig.balance_surrogates) in every enrollment")
    p.add_argument("--mask-set", type=int, help="masks per enrollment of our method (EnrollConfig.members, default 1); "
                   "each probe is cloaked by the member `facecloak apply` would pick")
    p.add_argument("--member-separation", type=float, metavar="W",
                   help="weight of the set members' mean pairwise cosine in our method's loss (PGDConfig.member_separation)")
    p.add_argument("--view-separation", type=float, metavar="W",
                   help="weight of the mean cosine between different cloaked views in our method's loss (PGDConfig.view_separation)")
    p.add_argument("--bf16", dest="bf16_surrogates", action="store_true", default=None,
                   help="our method runs its surrogates in bfloat16 (PGDConfig.bf16_surrogates)")
    p.add_argument("--bf16-convolutions", action=argparse.BooleanOptionalAction,
                   help="our method's convolutions on bfloat16 arithmetic, or not (PGDConfig.bf16_convolutions; "
                   "default: the core's, on where the CPU has bfloat16 units)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="where our method's PGD runs (default torch-cpu, PyTorch eager; auto: the compiled step of "
                   "`facecloak enroll` for the first ensemble's rows)")
    p.add_argument("--perceptual", action="store_true", default=None,
                   help="our method with the perceptual budget (facecloak enroll --perceptual; eps = the row's eps_A)")
    p.add_argument("--eot-rotation", type=float, metavar="DEG",
                   help="our method rotates every view by up to DEG degrees per step (PGDConfig.diversity_rotation)")
    p.add_argument("--eot-jpeg", type=int, metavar="Q",
                   help="our method sends every view through a differentiable JPEG at quality Q (PGDConfig.upload_jpeg; 0 = off)")
    p.add_argument("--eot-spectrum", type=float, metavar="RHO",
                   help="our method simulates spectra: DCT gains in 1 +- RHO and pixel noise per view and step "
                   "(SSA; PGDConfig.spectrum_rho; 0 = off)")
    p.add_argument("--gradient-blur", type=float, metavar="SIGMA",
                   help="our method smooths every step's gradient with a Gaussian of SIGMA px (TI; PGDConfig.grad_sigma; 0 = off)")
    p.add_argument("--skip-gradient", type=float, metavar="GAMMA",
                   help="our method scales the gradient through residual branches by GAMMA (SGM; PGDConfig.skip_gradient)")
    p.add_argument("--visibility-weight", type=float, metavar="W",
                   help="our method also descends W x the mask's visible energy (PGDConfig.visibility_weight)")
    p.add_argument("--methods", type=_names, help="subset of clean,noise,centre_uniform,centre,pgd,ours_bm,ours")
    p.add_argument("--jpeg", type=_ints, help="upload JPEG qualities, first = headline (default 90,75,50; 0 = none)")
    p.add_argument("--resize", type=float, help="upload downscale factor (default 0.8)")
    p.add_argument("--eps", type=float, help="budget in grey levels (default 8)")
    p.add_argument("--eps-focus", type=float, help="focus budget eps_A in grey levels (default 32)")
    p.add_argument("--uniform-eps", type=float, help="uniform budget of the OPOM class-centre baseline, grey levels (default 22)")
    p.add_argument("--budget-scales", type=_floats, help="extra budget scales for PSR vs budget (default 0.5,1.5)")
    p.add_argument("--views", type=int, help="views per enrollment (default: the core's)")
    p.add_argument("--iterations", type=int, help="PGD iterations per enrollment (default: the core's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch/ONNX Runtime/OpenCV (default 1)")
    p.add_argument("--resume", action="store_true", help="keep people already recorded in OUTPUT (same settings)")
    p.add_argument("--shard", type=_shard, help="K/N: run only people K, K+N, ... into their own records file, "
                   "for parallel processes; then run once more with --resume to merge and report")
    p.add_argument("--report-only", action="store_true", help="rewrite report.md and plots from OUTPUT/results.json")
    p.set_defaults(func=cmd_eval)


def config_from_args(args: argparse.Namespace):
    """EvalConfig from the defaults (or --quick), overridden by every option given."""
    from .protocol import QUICK, EvalConfig, leave_one_out

    cfg = QUICK if args.quick else EvalConfig()
    given = {f.name: getattr(args, f.name) for f in fields(EvalConfig) if getattr(args, f.name, None) is not None}
    for key in ("eps", "eps_focus", "uniform_eps"):
        if key in given:
            given[key] = given[key] / 255.0
    if "people" in given and "gallery_people" not in given:
        given["gallery_people"] = max(cfg.gallery_people, given["people"])
    if "ensembles" in given and "surrogates" not in given:  # ensembles alone: no single-surrogate rows
        given.update(surrogates=(), ensemble=False)
    cfg = replace(cfg, **given)
    if getattr(args, "leave_one_out", False):
        cfg = leave_one_out(cfg, given.get("targets"), keep=given.keys() - {"targets", "ensembles"})
    cfg.validate()
    return cfg


def add_comparison_options(p: argparse.ArgumentParser, ensemble: str, targets: str) -> None:
    """Options of the benches that run our method from one ensemble in several variants side by side (bench/)."""
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--people", type=int, default=8)
    p.add_argument("--probes", type=int, default=4)
    p.add_argument("--distractors", type=int, default=300)
    p.add_argument("--ensemble", default=ensemble, help="surrogates of our method (comma-separated)")
    p.add_argument("--targets", default=targets, help="attackers, all outside the ensemble")
    p.add_argument("--views", type=int, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", choices=BACKENDS, default="torch-cpu",
                   help="where our method's PGD runs (auto: the compiled step of `facecloak enroll`)")


def comparison_config(args: argparse.Namespace, quick: bool = False):
    """The comparison benches' EvalConfig: our method from ``--ensemble`` against ``--targets`` at the headline
    upload only (JPEG 90; methods clean, noise, ours; no budget sweep), gallery of 100 LFW people (2 if quick)."""
    from .protocol import EvalConfig

    return EvalConfig(people=args.people, probes=args.probes, gallery_people=max(2 if quick else 100, args.people),
                      distractors=args.distractors, surrogates=(), ensemble=False, ensembles=(tuple(args.ensemble.split(",")),),
                      targets=tuple(args.targets.split(",")), methods=("clean", "noise", "ours"), jpeg=(90,),
                      budget_scales=(), views=args.views, iterations=args.iterations, backend=args.backend)


GRID_PEOPLE = 8  # people in the report's visibility grid


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from ..apply import face_region
    from ..errors import FaceCloakError
    from ..faces import FaceDetector, detect_largest_face
    from ..models.weights import flush_subnormals
    from .report import EXAMPLE_METHODS, LABELS, save_examples, save_visibility_grid, write_report
    from .protocol import ensemble_label
    from .runner import RESULTS, run_eval

    out = Path(args.output)
    if args.report_only:
        try:
            results = json.loads((out / RESULTS).read_text())
        except (OSError, ValueError) as exc:
            raise BadOptionError(f"cannot read {out / RESULTS}: {exc}") from None
        print(f"wrote {write_report(results, out)}")
        return 0
    cfg = config_from_args(args)
    flush_subnormals()  # before the detector's and PyTorch's worker threads exist, so they inherit it
    first = cfg.surrogates[0] if cfg.surrogates else ensemble_label(cfg.ensembles[0])
    detector = FaceDetector()

    grid: list[tuple[str, np.ndarray, dict[str, np.ndarray]]] = []

    def examples(index: int, record: dict, variants: list) -> None:
        picks = {v.method: v.photos[0] for v in variants if v.scale == 1.0 and v.surrogate in (first, "-")}
        if index == 0:  # one held-out photo of the first person, every method with the first surrogate
            tiles = [(LABELS[m], picks[m]) for m in EXAMPLE_METHODS if m in picks]
            save_examples(tiles, out / "examples.png")
        if index < GRID_PEOPLE and {"ours", "clean"} <= picks.keys():  # the visibility grid: face box + 10 %, at the photo's resolution
            try:
                box = detect_largest_face(detector, picks["clean"]).box
            except FaceCloakError:
                return
            region = face_region(box, picks["clean"].shape)
            if region is not None:
                x0, y0, x1, y1 = region
                grid.append((record["person"], picks["clean"][y0:y1, x0:x1], {"cloaked": picks["ours"][y0:y1, x0:x1]}))
                save_visibility_grid(grid, out / "visibility_grid.png")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.threads < 1:
        raise BadOptionError(f"--threads must be >= 1, got {args.threads}")
    results = run_eval(cfg, out, resume=args.resume, log=log, on_person=examples, threads=args.threads, shard=args.shard)
    if results is None:
        print(f"shard {args.shard[0]}/{args.shard[1]} recorded in {out}; merge with: facecloak eval -o {out} --resume ...")
        return 0
    report = write_report(results, out)
    print(f"wrote {out / RESULTS} and {report}")
    return 0

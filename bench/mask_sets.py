"""Mask sets against the cloaked-gallery attack and linkability (issue 14), side by side in one run.

One benchmark run (``facecloak eval``'s protocol, ``facecloak.evaluate``) per set variant, in one process
so the attacker's gallery is embedded once; each run writes its own records/results/report under
OUT/set-LABEL. A variant is ``K`` (a set of K at the run's views and the core's member separation),
optionally with ``/vN`` (N views), ``/sW`` (PGDConfig.member_separation W) and ``/xW``
(PGDConfig.view_separation W): ``4/v4/s0`` is a set of 4 on 4 views without the separation term, ``1/x3`` one
mask whose different views are kept apart at weight 3. Printed per black-box target: clean-gallery top-1 PSR,
cloaked-gallery top-1 PSR and the share of same-person cloaked pairs linked at the attacker's FAR 1e-3
threshold, each with its 95 % people-bootstrap interval, and the enrollment seconds per person. For a set the
cloaked-gallery column is split into trials whose gallery photo carries another member than the probe and those
that share one (about 1/K of trials under the per-photo rotation: the one-mask attack again).

    python bench/mask_sets.py -o /tmp/sets --sets 1,4/v4,4/v4/s0 --people 16 --probes 4   # ~30 min on 2 cores
    python bench/mask_sets.py -o /tmp/sets --quick                                          # 2 people, tiny
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from facecloak.evaluate.cli import add_comparison_options, comparison_config
from facecloak.evaluate.report import write_report
from facecloak.evaluate.runner import run_eval


def _cell(row: dict, key: str) -> str:
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return "-"
    return f"{100 * value:5.1f}% ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})" if ci else f"{100 * value:5.1f}%"


@dataclass(frozen=True)
class SetVariant:
    label: str
    size: int
    views: int | None  # None: the run's --views
    separation: float | None  # None: the core's PGDConfig.member_separation
    view_separation: float | None = None  # None: the core's PGDConfig.view_separation


def parse_variant(text: str) -> SetVariant:
    """``K[/vN][/sW][/xW]`` -> a set variant; a one-line error for anything else."""
    size, *options = text.strip().split("/")
    views = separation = view_separation = None
    try:
        for option in options:
            if option[:1] == "v":
                views = int(option[1:])
            elif option[:1] == "s":
                separation = float(option[1:])
            elif option[:1] == "x":
                view_separation = float(option[1:])
            else:
                raise ValueError(option)
        return SetVariant(text.strip(), int(size), views, separation, view_separation)
    except ValueError:
        raise SystemExit(f"mask_sets: a set variant is K[/vN][/sW][/xW] (e.g. 4/v4/s3), got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="1,4", help="set variants K[/vN][/sW][/xW], comma-separated (first = reference)")
    add_comparison_options(parser, ensemble="sface,facenet", targets="ms1m,sirius,faceplugin")
    parser.add_argument("--quick", action="store_true", help="2 people x 3 probes, 4 views x 2 iterations, sets 1 and 2/v2")
    args = parser.parse_args()
    if args.quick:
        args.people, args.probes, args.views, args.iterations, args.sets, args.distractors = 2, 3, 4, 2, "1,2/v2", 60
    base = comparison_config(args, args.quick)
    ensemble, targets = base.ensembles[0], base.targets
    print("load at start:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    results = {}
    for variant in (parse_variant(v) for v in args.sets.split(",")):
        out = Path(args.output) / f"set-{variant.label.replace('/', '-')}"
        config = replace(base, mask_set=variant.size, views=variant.views or base.views, member_separation=variant.separation,
                         view_separation=variant.view_separation)
        results[variant.label] = run_eval(config, out, log=lambda m: print(m, flush=True), threads=args.threads)
        write_report(results[variant.label], out, title=f"Mask set {variant.label}")
    label = "+".join(ensemble)
    print(f"\n{args.people} people x {args.probes} probes, ours = {label}, JPEG 90 + resize 0.8, black-box targets only")
    print(f"{'target':11s} {'set':>9s}  {'clean-gallery top-1':>22s}  {'cloaked-gallery top-1':>22s}  "
          f"{'other member':>22s}  {'same member':>22s}  {'linked pairs':>22s}  enroll s")
    for target in targets:
        for size, res in results.items():
            rows = {r["method"]: r for r in res["rows"] if r["target"] == target and r["jpeg"] == 90}
            ours = rows["ours"]
            seconds = statistics.median(v[f"ours/{label}"] for v in res["seconds"]["per_person"].values())
            print(f"{target:11s} {size:>9s}  {_cell(ours, 'top1_psr'):>22s}  {_cell(ours, 'cloaked_gallery_top1_psr'):>22s}  "
                  f"{_cell(ours, 'cloaked_gallery_other_member_top1_psr'):>22s}  "
                  f"{_cell(ours, 'cloaked_gallery_same_member_top1_psr'):>22s}  {_cell(ours, 'linked'):>22s}  {seconds:7.1f}")
        clean = {r["method"]: r for r in results[next(iter(results))]["rows"] if r["target"] == target and r["jpeg"] == 90}["clean"]
        print(f"{target:11s} {'clean':>9s}  {_cell(clean, 'top1_psr'):>22s}  {_cell(clean, 'cloaked_gallery_top1_psr'):>22s}  "
              f"{'-':>22s}  {'-':>22s}  {_cell(clean, 'linked'):>22s}")
    print("load at end:", ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()

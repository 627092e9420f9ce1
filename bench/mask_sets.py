"""Mask sets against the cloaked-gallery attack and linkability (issue 14), side by side in one run.

One benchmark run (``facecloak eval``'s protocol, ``facecloak.evaluate``) per set size, in one process so
the attacker's gallery is embedded once; each run writes its own records/results/report under
OUT/set-K. Printed per black-box target: clean-gallery top-1 PSR, cloaked-gallery top-1 PSR and the
share of same-person cloaked pairs linked at the attacker's FAR 1e-3 threshold, each with its 95 %
people-bootstrap interval, and the enrollment seconds per person, for every set size.

    python bench/mask_sets.py -o /tmp/sets --sizes 1,4 --people 8 --probes 4      # ~1 h on 2 cores
    python bench/mask_sets.py -o /tmp/sets --quick                                  # 2 people, tiny
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from dataclasses import replace
from pathlib import Path

from facecloak.evaluate.cli import add_comparison_options, comparison_config
from facecloak.evaluate.report import write_report
from facecloak.evaluate.runner import run_eval


def _cell(row: dict, key: str) -> str:
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return "-"
    return f"{100 * value:5.1f}% ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})" if ci else f"{100 * value:5.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4", help="mask-set sizes, comma-separated (first = reference)")
    add_comparison_options(parser, ensemble="sface,facenet", targets="ms1m,sirius,faceplugin")
    parser.add_argument("--quick", action="store_true", help="2 people x 3 probes, 4 views x 2 iterations, sizes 1,2")
    args = parser.parse_args()
    if args.quick:
        args.people, args.probes, args.views, args.iterations, args.sizes, args.distractors = 2, 3, 4, 2, "1,2", 60
    base = comparison_config(args, args.quick)
    ensemble, targets = base.ensembles[0], base.targets
    print("load at start:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        out = Path(args.output) / f"set-{size}"
        results[size] = run_eval(replace(base, mask_set=size), out, log=lambda m: print(m, flush=True), threads=args.threads)
        write_report(results[size], out, title=f"Mask set of {size}")
    label = "+".join(ensemble)
    print(f"\n{args.people} people x {args.probes} probes, ours = {label}, JPEG 90 + resize 0.8, black-box targets only")
    print(f"{'target':11s} {'set':>3s}  {'clean-gallery top-1':>22s}  {'cloaked-gallery top-1':>22s}  {'linked pairs':>22s}  enroll s")
    for target in targets:
        for size, res in results.items():
            rows = {r["method"]: r for r in res["rows"] if r["target"] == target and r["jpeg"] == 90}
            ours = rows["ours"]
            seconds = statistics.median(v[f"ours/{label}"] for v in res["seconds"]["per_person"].values())
            print(f"{target:11s} {size:3d}  {_cell(ours, 'top1_psr'):>22s}  {_cell(ours, 'cloaked_gallery_top1_psr'):>22s}  "
                  f"{_cell(ours, 'linked'):>22s}  {seconds:7.1f}")
        clean = {r["method"]: r for r in results[next(iter(results))]["rows"] if r["target"] == target and r["jpeg"] == 90}["clean"]
        print(f"{target:11s} {'clean':>5s}{_cell(clean, 'top1_psr'):>22s}  {_cell(clean, 'cloaked_gallery_top1_psr'):>22s}  "
              f"{_cell(clean, 'linked'):>22s}")
    print("load at end:", ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()

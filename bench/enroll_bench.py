"""Enrollment benchmark: the default backend against PyTorch eager, same photo, same settings, one run.

    .venv/bin/python bench/enroll_bench.py                      # the default ensemble, 8 views x 10 iterations
    .venv/bin/python bench/enroll_bench.py --quick              # sface, 2 views x 3 iterations
    .venv/bin/python bench/enroll_bench.py --backends torch-cpu,auto,ort-cpu --repeats 5
    .venv/bin/python bench/enroll_bench.py --backends torch-cpu,auto,auto:bf16   # and the surrogates in bfloat16
    .venv/bin/python bench/enroll_bench.py --backends auto:subnormals,auto   # what flushing subnormals saves
    .venv/bin/python bench/enroll_bench.py --backends auto:fp32,auto     # float32 against the default (bf16 convolutions on AMX)
    .venv/bin/python bench/enroll_bench.py --set 4 --set-views 4   # and a mask set of 4 on 4 views, x the single mask

A backend may carry options after colons: ``bf16`` the surrogates in bfloat16 (= ``facecloak enroll --bf16``),
``bf16conv`` / ``fp32`` the convolutions on bfloat16 arithmetic / everything in float32 (= ``--bf16-convolutions`` /
``--no-bf16-convolutions``; without either, the default: bfloat16 convolutions where the CPU has bfloat16 units),
and ``subnormals`` to keep the CPU's subnormal arithmetic, as a process that never
calls ``flush_subnormals`` does (``auto,auto:subnormals`` times what flushing them saves).
Each backend runs in its own process (so its peak RSS is its own), built by facecloak.assemble exactly
as `facecloak enroll` builds it. "first use" is building the enroller plus the first enrollment: for
"auto" on a cold cache it includes the one-time AOT compilation (use --cold to force that).
Prints per backend: first use, median steady-state enrollment with its stages, x vs torch eager, peak RSS;
then the compute floor: the optimise stage's FLOPs (surrogate forward + backward, counted by PyTorch)
against this machine's fp32 (and bf16) matmul peak, i.e. the fastest the stage could run if every FLOP ran at
peak, and the share of that peak each backend achieved.
State the machine load with the figures (printed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from facecloak.presets import DEFAULT_SURROGATES

BASELINE = "torch-cpu"


# Entry options that set PGDConfig fields (none: the core's defaults); "subnormals" keeps the CPU's subnormal arithmetic.
PGD_OPTIONS = {"fp32": {"bf16_convolutions": False}, "bf16": {"bf16_surrogates": True}, "bf16conv": {"bf16_convolutions": True}}
ENTRY_OPTIONS = (*PGD_OPTIONS, "subnormals")


def parse_entry(entry: str) -> tuple[str, dict[str, bool], bool]:
    """BACKEND[:OPTION...] -> (backend, PGDConfig fields to set, flush subnormals):
    ``auto`` -> ("auto", {}, True); ``auto:bf16:subnormals`` -> ("auto", {"bf16_surrogates": True}, False)."""
    backend, *options = entry.split(":")
    unknown = [o for o in options if o not in ENTRY_OPTIONS]
    if unknown:
        sys.exit(f"unknown option {unknown[0]!r} in {entry!r} (one of {', '.join(ENTRY_OPTIONS)})")
    pgd = {k: v for o in options if o in PGD_OPTIONS for k, v in PGD_OPTIONS[o].items()}
    return backend, pgd, "subnormals" not in options


def measure(entry: str, surrogates: tuple[str, ...], views: int, iterations: int, repeats: int, photo: str,
            members: int = 1) -> dict:
    """One backend (``entry``: BACKEND[:OPTION...]) in this process: first use, then ``repeats`` timed enrollments
    (of a set of ``members``)."""
    from dataclasses import replace

    from facecloak.assemble import EnrollerSpec, build_enroller
    from facecloak.assets import assets_dir
    from facecloak.enroll import EnrollConfig
    from facecloak.imageio import read_image
    from facecloak.models.weights import flush_subnormals

    backend, pgd, flush = parse_entry(entry)
    if flush:  # as `facecloak enroll` does, before any worker thread exists
        flush_subnormals()
    base = EnrollConfig()
    config = replace(base, surrogates=surrogates, views=views, pgd=replace(base.pgd, iterations=iterations, **pgd),
                     members=members)
    image = read_image(assets_dir() / photo)
    start = time.perf_counter()
    assembled = build_enroller(EnrollerSpec(backend=backend, surrogates=surrogates, views=views, pgd=config.pgd,
                                            members=config.step_members, view_backend="augment"))
    assembled.enroller.enroll(image, config)
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = assembled.enroller.enroll(image, config)
        runs.append((time.perf_counter() - start, result.timings))
    return {"backend": assembled.backend, "notes": assembled.notes[1:], "first_use_s": first,
            "median_s": statistics.median(r[0] for r in runs), "runs_s": [r[0] for r in runs],
            "stages_s": {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]},
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def matmul_peak_gflops(threads: int, side: int = 2048, rounds: int = 10, dtype: str = "float32") -> float:
    """Best matmul throughput in ``dtype`` on ``threads`` threads: the machine's practical peak for dense work."""
    import torch

    torch.set_num_threads(threads)
    a, b = (torch.rand(side, side, dtype=getattr(torch, dtype)) for _ in range(2))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * side**3 / best / 1e9


def optimise_gflop(surrogates: tuple[str, ...], views: int, iterations: int) -> float:
    """FLOPs of the PGD iterations: each surrogate's forward and backward on every view, every iteration."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from facecloak.models import torch_embedder

    total = 0
    for name in surrogates:
        batch = torch.rand(views, 3, 112, 112, requires_grad=True)  # the aligned frame; embedders resize
        with FlopCounterMode(display=False) as counter:
            torch_embedder(name)(batch).sum().backward()
        total += counter.get_total_flops()
    return total * iterations / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=f"{BASELINE},auto",
                        help="comma list of BACKEND[:OPTION...] (fp32, bf16, bf16conv, subnormals); the first is the baseline")
    parser.add_argument("--surrogates", default=",".join(DEFAULT_SURROGATES))
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="sface, 2 views x 3 iterations, 2 repeats")
    parser.add_argument("--cold", action="store_true", help="prepare 'auto' from an empty cache (first use from scratch)")
    parser.add_argument("--photo", default="faces/lfw/Tony_Blair/Tony_Blair_0001.jpg")
    parser.add_argument("--set", type=int, default=1, help="also time a mask set of this many members (EnrollConfig.members)")
    parser.add_argument("--set-views", type=int, help="views of the set's enrollment (default --views)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one backend, print JSON
    parser.add_argument("--members", type=int, default=1, help=argparse.SUPPRESS)  # internal: with --one
    args = parser.parse_args()
    if args.quick:
        args.surrogates, args.views, args.iterations, args.repeats = "sface", 2, 3, 2
    surrogates = tuple(args.surrogates.split(","))
    if args.one:
        print(json.dumps(measure(args.one, surrogates, args.views, args.iterations, args.repeats, args.photo, args.members)))
        return
    env = dict(os.environ)
    if args.cold:
        env["FACECLOAK_CACHE"] = tempfile.mkdtemp(prefix="facecloak-bench-")

    def run_one(backend: str, views: int, members: int) -> dict:
        cmd = [sys.executable, __file__, "--one", backend, "--surrogates", args.surrogates, "--views", str(views),
               "--iterations", str(args.iterations), "--repeats", str(args.repeats), "--photo", args.photo,
               "--members", str(members)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            sys.exit(f"{backend} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    results = [run_one(backend, args.views, 1) for backend in args.backends.split(",")]
    set_views = args.set_views or args.views
    sets = [run_one(backend, set_views, args.set) for backend in args.backends.split(",")] if args.set > 1 else []
    base = results[0]["median_s"]
    print(f"enrollment, {'+'.join(surrogates)}, {args.views} views x {args.iterations} iterations, "
          f"median of {args.repeats} after first use; torch threads: default")
    print(f"{'asked':12s} {'ran':13s} {'first use':>10s} {'median':>8s} {'x eager':>8s} {'peak RSS':>9s}  stages (median)")
    for asked, r in zip(args.backends.split(","), results):
        stages = "  ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items())
        print(f"{asked:12s} {r['backend']:13s} {r['first_use_s']:9.1f}s {r['median_s']:7.2f}s {base / r['median_s']:7.2f}x "
              f"{r['peak_rss_mib']:7.0f}MiB  {stages}")
        for note in r["notes"]:
            print(f"  note: {note}")
    for asked, single, r in zip(args.backends.split(","), results, sets):
        print(f"set of {args.set} on {set_views} views, {asked} (ran {r['backend']}): first use {r['first_use_s']:.1f}s, "
              f"median {r['median_s']:.2f}s = {r['median_s'] / single['median_s']:.2f}x the single mask "
              f"(optimise {r['stages_s']['optimise']:.2f}s = {r['stages_s']['optimise'] / single['stages_s']['optimise']:.2f}x)")
        for note in r["notes"]:
            print(f"  note: {note}")
    threads = os.cpu_count() or 1
    peak, work = matmul_peak_gflops(threads), optimise_gflop(surrogates, args.views, args.iterations)
    bf16_peak = matmul_peak_gflops(threads, dtype="bfloat16")
    print(f"compute floor: optimise stage {work:.0f} GFLOP; fp32 matmul peak {peak:.0f} GFLOP/s on {threads} threads "
          f"-> {work / peak:.2f}s if every FLOP ran at peak (bf16 matmul peak {bf16_peak:.0f} GFLOP/s -> {work / bf16_peak:.2f}s)")
    for asked, r in zip(args.backends.split(","), results):
        achieved = work / r["stages_s"]["optimise"]
        print(f"  {asked:12s} optimise {r['stages_s']['optimise']:.2f}s = {achieved:.0f} GFLOP/s ({achieved / peak:.0%} of the fp32 peak)")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

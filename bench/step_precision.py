"""The AOT-compiled PGD step with the surrogates in float32 and in bfloat16, side by side in one run.

For each surrogate set (``--sets``, sets separated by spaces, members by commas) both steps are compiled
(``facecloak-export aot`` / ``aot --bf16``: export.step_graph.compile_step_aot) into a temporary folder and
run on the same inputs (8 views at 112 px), in alternation: median milliseconds per step, the bf16 / fp32 speed ratio, and
how far bf16 moves one step (share of delta pixels updated identically; the loss). Protection is measured
by the benchmark (``bench/transfer_ablation.py --variants base,bf16``), not here. bf16 pays only where the
CPU multiplies it in hardware (AMX tiles): the machine's fp32 and bf16 matmul peaks are printed first.

    python bench/step_precision.py                                   # each default surrogate, then the ensemble
    python bench/step_precision.py --sets facenet sface,ms1m,faceplugin --repeats 9
    python bench/step_precision.py --quick                           # sface on 2 views, 3 repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from enroll_bench import matmul_peak_gflops  # noqa: E402 - a sibling bench script

from facecloak.export.step_graph import StepSpec, compile_step_aot, example_inputs  # noqa: E402
from facecloak.optimise import PGDConfig  # noqa: E402


def compile_step(spec: StepSpec, folder: Path) -> tuple[object, float]:
    """``spec``'s AOT step compiled into ``folder`` and loaded; (the package's runner, compile seconds)."""
    path = folder / f"{spec.name}_{'bf16' if spec.pgd.bf16_surrogates else 'fp32'}.pt2"
    start = time.perf_counter()
    compile_step_aot(spec, path)
    return torch._inductor.aoti_load_package(str(path)), time.perf_counter() - start


def time_interleaved(runs: list[object], inputs: tuple[torch.Tensor, ...], repeats: int) -> tuple[list[float], list[tuple]]:
    """Median seconds per step of each runner, timed in alternation (a drifting machine slows all alike), and outputs."""
    seconds: list[list[float]] = [[] for _ in runs]
    with torch.no_grad():
        outputs = [tuple(run(*inputs)) for run in runs]  # warm-up
        for _ in range(repeats):
            for i, run in enumerate(runs):
                start = time.perf_counter()
                run(*inputs)
                seconds[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in seconds], outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["sface", "ms1m", "faceplugin", "facenet", "sface,ms1m,faceplugin"])
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="sface on 2 views, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.sets, args.views, args.repeats = ["sface"], 2, 3
    threads = torch.get_num_threads()
    print(f"load at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {threads} threads; matmul peak fp32 "
          f"{matmul_peak_gflops(threads):.0f} GFLOP/s, bf16 {matmul_peak_gflops(threads, dtype='bfloat16'):.0f} GFLOP/s")
    print(f"{'surrogates':26s} {'fp32 ms':>8s} {'bf16 ms':>8s} {'speed-up':>8s} {'same update':>11s} {'loss fp32':>10s} "
          f"{'loss bf16':>10s}  compile s")
    with tempfile.TemporaryDirectory(prefix="facecloak-step-precision-") as scratch:
        for text in args.sets:
            models = tuple(m for m in text.split(",") if m)
            specs = [StepSpec(models, args.views, pgd=PGDConfig(bf16_surrogates=bf16)) for bf16 in (False, True)]
            (plain_run, plain_compile), (half_run, half_compile) = (compile_step(s, Path(scratch)) for s in specs)
            (plain, half), (plain_out, half_out) = time_interleaved([plain_run, half_run], example_inputs(specs[0]), args.repeats)
            same = (plain_out[0] == half_out[0]).float().mean().item()
            print(f"{'+'.join(models):26s} {plain * 1e3:8.0f} {half * 1e3:8.0f} {plain / half:7.2f}x {same:10.1%} "
                  f"{float(plain_out[3]):10.4f} {float(half_out[3]):10.4f}  {plain_compile:.0f} / {half_compile:.0f}", flush=True)
    print(f"load at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

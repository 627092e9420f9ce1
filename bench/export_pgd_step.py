"""One PGD step for 8 views at 112 px: ONNX Runtime running the exported step graph vs PyTorch eager autograd.

Same machine, same run, same real inputs (augmented views of an LFW face, anchors from other LFW
people), timings interleaved so background load hits both alike. Prints ms/step and the ratio.

    python bench/export_pgd_step.py                 # surrogate sets: sface, facenet, sface+facenet
    python bench/export_pgd_step.py --quick         # sface only, fewer repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import onnxruntime as ort
import torch

from facecloak.engines.runtimes import default_build_dir
from facecloak.export.step_graph import STEP_OUTPUTS, StepSpec, export_step, step_function
from facecloak.export.verify import compare_step, float64_reference, real_step_inputs
from facecloak.optimise import PGDConfig

LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def _median_ms(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_set(models: tuple[str, ...], views: int, out: Path, repeats: int, threads: int) -> None:
    spec = StepSpec(models, views, 112, PGDConfig())
    path = out / f"{spec.name}.onnx"
    start = time.perf_counter()
    if not path.exists():
        timings = export_step(spec, path)
        print(f"[{'+'.join(models)}] export: trace {timings['trace_s']:.1f} s, ONNX {timings['export_s']:.1f} s")
    inputs = real_step_inputs(spec)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names(), inputs)}
    step = step_function(spec)
    sessions = {}
    for name, level in LEVELS.items():
        opts = ort.SessionOptions()
        opts.graph_optimization_level, opts.intra_op_num_threads, opts.log_severity_level = level, threads, 3
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    print(f"[{'+'.join(models)}] ready in {time.perf_counter() - start:.1f} s; {views} views at 112 px, {threads} threads")
    runners = {"torch eager autograd": lambda: step(*inputs)}
    runners.update({f"ORT CPU ({name} graph opts)": (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()})
    for fn in runners.values():  # warm-up: allocator, kernel selection, lazy init
        fn()
    results = {name: [] for name in runners}
    for _ in range(repeats):  # interleaved rounds
        for name, fn in runners.items():
            results[name].append(_median_ms(fn, 1))
    base = statistics.median(results["torch eager autograd"])
    print(f"  {'runtime':34s} {'ms/step':>9s} {'speed-up vs torch':>18s}")
    for name, ms in results.items():
        median = statistics.median(ms)
        print(f"  {name:34s} {median:9.1f} {base / median:17.2f}x")
    reference = float64_reference(spec, inputs)
    got = dict(zip(STEP_OUTPUTS, sessions["all"].run(list(STEP_OUTPUTS), feeds)))
    figures = compare_step(got, reference)
    print(f"  ORT vs float64: gradient sign agreement {figures['grad_sign_agreement']:.5f}, relative L2 {figures['grad_rel_l2']:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sface only, 3 rounds")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=default_build_dir() / "bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = [("sface",)] if args.quick else [("sface",), ("facenet",), ("sface", "facenet")]
    for models in sets:
        bench_set(models, args.views, args.out, 3 if args.quick else args.repeats, args.threads)


if __name__ == "__main__":
    main()

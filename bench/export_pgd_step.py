"""One PGD step for 8 views at 112 px: ONNX Runtime running the exported step graph vs PyTorch eager autograd.

Same machine, same run, same real inputs (augmented views of an LFW face, anchors from other LFW
people), timings interleaved so background load hits both alike. Prints ms/step and the ratio.

    python bench/export_pgd_step.py                 # surrogate sets: sface, facenet, sface+facenet
    python bench/export_pgd_step.py --quick         # sface only, fewer repeats
    python bench/export_pgd_step.py --loop          # whole PGD loop: the core loop with the torch vs the ORT stepper
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from facecloak.engines.runtimes import default_build_dir
from facecloak.export.step_graph import DRAW_INPUTS, STEP_OUTPUTS, StepSpec, export_step, step_function
from facecloak.export.verify import compare_step, float64_reference, real_step_inputs
from facecloak.optimise import PGDConfig

LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def _ms(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _session(path: Path, level: ort.GraphOptimizationLevel, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level, opts.intra_op_num_threads, opts.log_severity_level = level, threads, 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bench_set(models: tuple[str, ...], views: int, out: Path, repeats: int, threads: int, unroll: int) -> None:
    spec = StepSpec(models, views, 112, PGDConfig())
    path = out / f"{spec.name}.onnx"
    start = time.perf_counter()
    timings = export_step(spec, path)  # always re-exported: a cached file may bake other PGD constants
    print(f"[{'+'.join(models)}] export: trace {timings['trace_s']:.1f} s, ONNX {timings['export_s']:.1f} s")
    inputs = real_step_inputs(spec)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names(), inputs)}
    step = step_function(spec)
    sessions = {name: _session(path, level, threads) for name, level in LEVELS.items()}
    # name -> (callable, steps it runs): times are reported per step
    runners = {"torch eager autograd": (lambda: step(*inputs), 1)}
    runners.update({f"ORT CPU ({name} graph opts)": ((lambda s=s: s.run(None, feeds)), 1) for name, s in sessions.items()})
    if unroll > 1:  # K chained steps in one graph
        unrolled = out / f"{spec.name}_k{unroll}.onnx"
        export_step(spec, unrolled, unroll=unroll)
        session = _session(unrolled, LEVELS["all"], threads)
        k_feeds = {**feeds, **{name: np.stack([feeds[name]] * unroll) for name in DRAW_INPUTS}}
        runners[f"ORT CPU ({unroll} steps unrolled)"] = (lambda: session.run(None, k_feeds), unroll)
    print(f"[{'+'.join(models)}] ready in {time.perf_counter() - start:.1f} s; {views} views at 112 px, {threads} threads")
    for fn, _ in runners.values():  # warm-up: allocator, kernel selection, lazy init
        fn()
    results = {name: [] for name in runners}
    for _ in range(repeats):  # interleaved rounds
        for name, (fn, steps) in runners.items():
            results[name].append(_ms(fn) / steps)
    base = statistics.median(results["torch eager autograd"])
    print(f"  {'runtime':34s} {'ms/step':>9s} {'speed-up vs torch':>18s}")
    for name, ms in results.items():
        median = statistics.median(ms)
        print(f"  {name:34s} {median:9.1f} {base / median:17.2f}x")
    reference = float64_reference(spec, inputs)
    got = dict(zip(STEP_OUTPUTS, sessions["all"].run(list(STEP_OUTPUTS), feeds)))
    figures = compare_step(got, reference)
    print(f"  ORT vs float64: gradient sign agreement {figures['grad_sign_agreement']:.5f}, relative L2 {figures['grad_rel_l2']:.2e}")


def bench_loop(models: tuple[str, ...], views: int, out: Path) -> None:
    """A whole enrollment optimisation (default PGDConfig): the core loop with the torch and the ORT stepper."""
    from facecloak.engines.graph_backend import GraphBackend
    from facecloak.engines.manifest import load_or_new
    from facecloak.engines.runtimes import RuntimeConfig, open_runtime
    from facecloak.export.pipeline import ExportConfig, export_step_graph
    from facecloak.optimise import Anchors, Budget, run_pgd
    from facecloak.optimise.torch_backend import TorchBackend

    pgd, spec = PGDConfig(), StepSpec(models, views, 112, PGDConfig())
    if spec.name not in load_or_new(out).artefacts:
        export_step_graph(ExportConfig(out=out, models=models, views=views, verify=False), pgd)
    inputs = dict(zip(spec.input_names(), real_step_inputs(spec)))
    budget = Budget(inputs["bound"][0].numpy() * 2, 8 / 255)  # a focus-like budget: 12/255 everywhere, base eps 8/255
    anchors = {m: Anchors(*(inputs[f"{k}_{m}"].numpy() for k in ("near", "far", "user"))) for m in models}
    view_array = inputs["views"].numpy()
    timed = {}
    for name, backend in (("torch", TorchBackend()), ("ORT", GraphBackend(open_runtime(RuntimeConfig("ort-cpu", out))))):
        step = backend.stepper(anchors, views, 112, pgd)
        start = time.perf_counter()
        timed[name] = (run_pgd(step, view_array, budget, pgd, seed=0), time.perf_counter() - start)
    (core, core_s), (graph, graph_s) = timed["torch"], timed["ORT"]
    close = float((np.abs(graph.delta - core.delta) < 1 / 255).mean())
    print(f"[{'+'.join(models)}] whole loop, {pgd.iterations} iterations, {views} views: torch step {core_s:.1f} s, "
          f"ORT step {graph_s:.1f} s, speed-up {core_s / graph_s:.2f}x")
    print(f"  final loss torch {core.losses[-1]:.4f} vs ORT {graph.losses[-1]:.4f}; delta pixels within 1/255: {close:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sface only, 3 rounds")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=default_build_dir() / "bench")
    parser.add_argument("--unroll", type=int, default=1, help="also time a graph of K chained steps (K > 1)")
    parser.add_argument("--loop", action="store_true", help="time the whole PGD loop (sface+facenet) instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.loop:
        bench_loop(("sface",) if args.quick else ("sface", "facenet"), args.views, args.out)
        return
    sets = [("sface",)] if args.quick else [("sface",), ("facenet",), ("sface", "facenet")]
    for models in sets:
        bench_set(models, args.views, args.out, 3 if args.quick else args.repeats, args.threads, args.unroll)


if __name__ == "__main__":
    main()

"""Enrollment benchmark: wall time per stage, batched vs one-view-at-a-time PGD, peak RSS.

Run: .venv/bin/python bench/enroll_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from facecloak.assets import assets_dir
from facecloak.enroll import Enroller, EnrollConfig
from facecloak.imageio import read_image
from facecloak.optimise import Budget, PGDConfig, run_pgd
from facecloak.optimise.torch_step import SurrogateTarget, TorchStepper


def one_at_a_time(views: np.ndarray, budget: Budget, targets: list[SurrogateTarget], cfg: PGDConfig) -> None:
    """The research code's schedule: one PGD update per view, views in sequence (same gradient count)."""
    state = None
    for _ in range(cfg.iterations):
        for i in range(len(views)):
            single = replace(cfg, iterations=1, random_start=state is None)
            state = run_pgd(TorchStepper(targets, single), views[i : i + 1], budget, single)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photo", default="faces/lfw/Tony_Blair/Tony_Blair_0001.jpg")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photo = read_image(assets_dir() / args.photo)
    enroller = Enroller()
    print(f"torch threads: {torch.get_num_threads()}")
    for surrogates in (("sface",), ("facenet",), ("sface", "facenet")):
        config = EnrollConfig(surrogates=surrogates)
        enroller.enroll(photo, config)  # warm-up: model load, gallery cache
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = enroller.enroll(photo, config)
            runs.append((time.perf_counter() - start, result.timings))
        total = statistics.median(r[0] for r in runs)
        stages = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
        print(f"\nenroll {'+'.join(surrogates)} (8 views x 10 iterations): total {total:.2f} s (median of {args.repeats})")
        print("  " + "  ".join(f"{k} {v:.3f}s" for k, v in stages.items()))

    # Batched vs sequential PGD on the same views, same number of view-gradients.
    from facecloak.faces import AlignedFrame, align_largest_face
    from facecloak.models import torch_embedder
    from facecloak.optimise import BudgetConfig
    from facecloak.views import AugmentViews, ViewRequest

    frame = AlignedFrame()
    aligned = align_largest_face(enroller.detector, photo, frame)
    views = torch.from_numpy(AugmentViews().generate(ViewRequest(photo, aligned.face, frame, 8, 0)))
    lms = np.hstack([aligned.face.landmarks, np.ones((5, 1))]) @ aligned.matrix.T
    budget = Budget.of_face(aligned.crop, lms, BudgetConfig())
    embed = torch_embedder("sface")
    with torch.no_grad():
        user = embed(views[:1])[0]
    targets = [SurrogateTarget(embed, -user, user.roll(1), user)]
    cfg = PGDConfig()
    timings = {}
    arrays = views.numpy()
    for name, fn in (("batched", lambda: run_pgd(TorchStepper(targets, cfg), arrays, budget, cfg)),
                     ("one-at-a-time", lambda: one_at_a_time(arrays, budget, targets, cfg))):
        fn()
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        timings[name] = statistics.median(samples)
    print(f"\nPGD stage, sface, 8 views x 10 iterations: batched {timings['batched']:.2f} s, "
          f"one-at-a-time {timings['one-at-a-time']:.2f} s, speed-up x{timings['one-at-a-time'] / timings['batched']:.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()

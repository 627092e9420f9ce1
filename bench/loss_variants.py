"""Ablation of the optimisation objective under the benchmark's protocol (held-out photos, JPEG 90).

Every variant learns one universal mask per person from the same views and budget with the core's
PGD loop; only the loss, its targets, the iteration count or the budget shape changes. Prints one
row per variant: black-box top-1/top-5 PSR, the target's best genuine similarity and SSIM, side by
side with the class-centre objective under the same focus budget.

    python bench/loss_variants.py --surrogate sface --target facenet --people 40:52
    python bench/loss_variants.py --surrogate facenet --target sface --people 40:52 --variants centre,ours,mid
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

import facecloak.optimise.torch_step as pgd
from facecloak.optimise import Budget, PGDConfig, run_pgd
from facecloak.enroll import EnrollConfig
from facecloak.evaluate.baselines import centre_targets, face_budget, shipped_mask
from facecloak.evaluate.harness import Harness, Variant, align_probes, cloak_probes
from facecloak.evaluate.protocol import EvalConfig, person_seed
from facecloak.faces import align_largest_face
from facecloak.imageio import read_image
from facecloak.models.weights import flush_subnormals
from facecloak.views import ViewRequest

# A mid-network activation per surrogate (about half-way through), for the feature-level loss.
MID_LAYER = {"sface": "conv_8_relu", "facenet": "/m/repeat_2/repeat_2.4/branch1/branch1.0/conv/Conv_output_0"}
Loss = Callable[[torch.Tensor, pgd.SurrogateTarget, float], torch.Tensor]


@dataclass
class Setup:
    """One variant's optimisation problem for one person."""

    targets: list[pgd.SurrogateTarget]
    pgd: PGDConfig
    budget: np.ndarray
    eps: float
    loss: Loss | None = None  # replaces the core's cloak_loss while this variant runs


@dataclass
class Person:
    views: torch.Tensor
    anchors: pgd.SurrogateTarget
    view_embeddings: torch.Tensor
    focus_budget: np.ndarray
    uniform_budget: Callable[[float], np.ndarray]


def eq4(emb: torch.Tensor, t: pgd.SurrogateTarget) -> torch.Tensor:
    return (emb - t.far).norm(dim=1) - (emb - t.near).norm(dim=1)


def mid_layer_setup(p: Person, surrogate: str, base: PGDConfig, weight: float = 3.0) -> tuple[Setup, list]:
    """Eq. 4 + self term, minus ``weight`` x the relative change of a mid-layer activation (FDA/ILA-style)."""
    state: dict = {}
    original_diversify = pgd.diversify

    def remember_draw(x, theta, down_size):
        state["draw"] = (theta, down_size)
        return original_diversify(x, theta, down_size)

    def embed(batch: torch.Tensor) -> torch.Tensor:
        out, state["feat"] = p.anchors.embed.with_activation(batch, MID_LAYER[surrogate])
        with torch.no_grad():  # the clean views through the same random transform
            _, state["clean"] = p.anchors.embed.with_activation(original_diversify(p.views, *state["draw"]), MID_LAYER[surrogate])
        return out

    def loss(emb: torch.Tensor, t: pgd.SurrogateTarget, w: float) -> torch.Tensor:
        change = (state["feat"] - state["clean"]).flatten(1).norm(dim=1) / state["clean"].flatten(1).norm(dim=1)
        return (eq4(emb, t) + w * (emb @ t.user) - weight * change).mean()

    target = pgd.SurrogateTarget(embed, p.anchors.near, p.anchors.far, p.anchors.user)
    return Setup([target], base, p.focus_budget, EnrollConfig().budget.eps, loss), [mock.patch.object(pgd, "diversify", remember_draw)]


def variants(p: Person, surrogate: str, base: PGDConfig) -> dict[str, Callable[[], tuple[Setup, list]]]:
    eps = EnrollConfig().budget.eps
    t = p.anchors
    centre = F.normalize(p.view_embeddings.mean(0), dim=0)
    focus = p.focus_budget

    def plain(setup: Setup) -> Callable[[], tuple[Setup, list]]:
        return lambda: (setup, [])

    def uniform(e: float) -> Callable[[], tuple[Setup, list]]:
        return plain(Setup(centre_targets((surrogate,), p.views), replace(base, self_weight=1.0), p.uniform_budget(e), e / 255))

    def worst_view(emb: torch.Tensor, t: pgd.SurrogateTarget, w: float) -> torch.Tensor:
        return eq4(emb, t).mean() + w * 0.1 * torch.logsumexp((emb @ t.user) / 0.1, 0)

    def per_view_self(emb: torch.Tensor, t: pgd.SurrogateTarget, w: float) -> torch.Tensor:
        return (eq4(emb, t) + w * (emb * p.view_embeddings).sum(1)).mean()

    return {
        "centre": plain(Setup(centre_targets((surrogate,), p.views), replace(base, self_weight=1.0), focus, eps)),
        "ours": plain(Setup([t], base, focus, eps)),
        "self_only": plain(Setup([pgd.SurrogateTarget(t.embed, t.user, t.user, t.user)], base, focus, eps)),
        "ours_self_is_centre": plain(Setup([pgd.SurrogateTarget(t.embed, t.near, t.far, centre)], base, focus, eps)),
        "ours_self_weight6": plain(Setup([t], replace(base, self_weight=6.0), focus, eps)),
        "ours_worst_view": plain(Setup([t], base, focus, eps, worst_view)),
        "ours_per_view_self": plain(Setup([t], base, focus, eps, per_view_self)),
        "ours_20_iterations": plain(Setup([t], replace(base, iterations=20, step=base.step / 2), focus, eps)),
        "mid": lambda: mid_layer_setup(p, surrogate, base),
        "centre_uniform12": uniform(12),
        "centre_uniform16": uniform(16),
        "centre_uniform20": uniform(20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--surrogate", default="sface")
    parser.add_argument("--target", default="facenet")
    parser.add_argument("--people", default="40:52", help="START:STOP slice of the benchmark's people order")
    parser.add_argument("--variants", help="comma-separated subset (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the pooled per-probe outcomes as JSON")
    args = parser.parse_args()
    start, stop = (int(v) for v in args.people.split(":"))
    cfg = EvalConfig(people=100, surrogates=(args.surrogate,), targets=(args.target,), jpeg=(90,))
    flush_subnormals()  # as `facecloak eval` does, before any worker thread exists
    harness = Harness(cfg, log=print, threads=args.threads)
    base = EnrollConfig()
    pooled: dict[str, dict[str, list]] = {}
    started = time.perf_counter()
    for person in harness.dataset.people[start:stop]:
        seed = person_seed(cfg.seed, person.name)
        enrollment = read_image(person.photos[0])
        probes = [read_image(path) for path in person.photos[1 : cfg.probes + 1]]
        aligned = align_largest_face(harness.detector, enrollment, base.frame)
        faces = align_probes(harness.detector, probes, base.frame)
        views = torch.from_numpy(harness.enroller.view_generator.generate(ViewRequest(enrollment, aligned.face, base.frame, base.views, seed)))
        anchors = harness.anchor_targets((args.surrogate,), aligned.crop)[0]
        with torch.no_grad():
            view_embeddings = anchors.embed(views)
        p = Person(views, anchors, view_embeddings, face_budget(aligned, cfg.budget()),
                   lambda e: face_budget(aligned, replace(cfg, eps=e / 255, eps_focus=e / 255).budget(matched=True)))
        for name, build in variants(p, args.surrogate, base.pgd).items():
            if args.variants and name not in args.variants.split(","):
                continue
            setup, patches = build()
            if setup.loss:
                patches.append(mock.patch.object(pgd, "cloak_loss", setup.loss))
            for patch in patches:
                patch.start()
            try:
                step = pgd.TorchStepper(setup.targets, setup.pgd)
                delta = run_pgd(step, views.numpy(), Budget(setup.budget, setup.eps), setup.pgd, seed).delta
            finally:
                for patch in patches:
                    patch.stop()
            mask = shipped_mask(delta, base.frame, (args.surrogate,))
            cloaked = cloak_probes(probes, faces, lambda i: mask)
            record = harness._score(person, Variant(name, args.surrogate, 1.0, cloaked), probes)
            outcome = record["attack"][str(cfg.jpeg[0])][args.target]
            acc = pooled.setdefault(name, {"rank": [], "genuine": [], "ssim": []})
            acc["rank"] += outcome["rank"]
            acc["genuine"] += [max(g) for g in outcome["genuine"]]
            acc["ssim"] += record["ssim"]
        print(f"{person.name} done ({time.perf_counter() - started:.0f}s)", flush=True)
    reference = pooled.get("centre")
    ref_top1 = np.mean(np.asarray(reference["rank"]) != 0) if reference else None
    print(f"\n{args.surrogate} -> {args.target} (black-box), people {start}..{stop - 1}, JPEG {cfg.jpeg[0]}, resize x{cfg.resize}")
    print(f"{'variant':22s} {'top-1 PSR':>9s} {'top-5 PSR':>9s} {'x centre':>8s} {'genuine':>8s} {'SSIM':>6s} {'probes':>6s}")
    for name, acc in pooled.items():
        ranks = np.asarray(acc["rank"])
        top1, top5 = np.mean(ranks != 0), np.mean((ranks < 0) | (ranks >= 5))
        ratio = f"{top1 / ref_top1:.2f}" if ref_top1 else "-"
        print(f"{name:22s} {100 * top1:8.1f}% {100 * top5:8.1f}% {ratio:>8s} {np.mean(acc['genuine']):8.3f} {np.mean(acc['ssim']):6.3f} {len(ranks):6d}")
    if args.out:
        Path(args.out).write_text(json.dumps(pooled) + "\n")


if __name__ == "__main__":
    main()

"""Exploratory probe: a mask set optimised jointly, with a term that keeps the members apart (issue 14).

The core's mask set (``facecloak.enroll.optimise_members``) optimises its K members one after the
other on disjoint views. Measured (docs/eval.md, "Mask sets"), members that are each optimised well
converge to one universal direction for the person, and that shared direction links the user's
cloaked photos. This probe replaces that stage for one process: all K deltas take one step together
on the same views (every member on every one of the first ``--shared-views`` views, the same diversity
draw), and the loss adds ``--separation`` times the mean cosine similarity between the K members'
cloaked embeddings of each view, under every surrogate. Separation 0 is the joint step alone (the
control). It runs on the PyTorch backend the benchmark enrolls with, so it does not reach the exported
step graph; it is the experiment that decides whether that graph is worth building.

Everything after ``--`` goes to ``bench/mask_sets.py``:

    python bench/joint_set_probe.py --separation 3 --shared-views 2 -- -o abl/joint-s3 \\
        --ensemble sface,ms1m,faceplugin --targets facenet,sirius --sizes 4 --people 16 --probes 4 --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import facecloak.enroll as enroll
from facecloak.models import torch_embedder
from facecloak.optimise import PGDConfig
from facecloak.optimise.loop import draw_diversity, random_start
from facecloak.optimise.loop import step_sizes as per_pixel_steps
from facecloak.optimise.torch_step import clip_to_budget, diversify


def mean_pairwise_cosine(emb: torch.Tensor) -> torch.Tensor:
    """(K, N, D) embeddings -> mean over views and over ordered member pairs j != k of cos(e_j, e_k)."""
    k = emb.shape[0]
    unit = F.normalize(emb, dim=-1)
    gram = torch.einsum("knd,jnd->nkj", unit, unit)
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=-1)
    return (off_diagonal / (k * (k - 1))).mean()


def joint_loss(emb: torch.Tensor, near: torch.Tensor, far: torch.Tensor, user: torch.Tensor, self_weight: float,
               separation: float) -> torch.Tensor:
    """FaceCloak Eq. 4 per member (``near``/``far`` (K, 1, D): member k's anchors) plus the separation term."""
    attack = (emb - far).norm(dim=-1) - (emb - near).norm(dim=-1) + self_weight * (emb @ user)
    return attack.mean() + (separation * mean_pairwise_cosine(emb) if emb.shape[0] > 1 else 0.0)


def joint_pgd(embedders: list, anchors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], views: np.ndarray,
              budget: enroll.Budget, cfg: PGDConfig, members: int, separation: float, seed: int) -> tuple[np.ndarray, list[float]]:
    """K deltas (K, 3, S, S) stepped together on all ``views``; the core loop's start, step sizes and draws."""
    if cfg.diversity_rotation or cfg.spectrum_rho or cfg.upload_jpeg or cfg.attention or cfg.chroma_ratio < 1 or cfg.visibility_weight:
        raise SystemExit("the joint probe implements the default PGD settings only (plain clip, no attention, no extra transforms)")
    n, size = views.shape[0], views.shape[-1]
    rng = np.random.default_rng(seed)
    bound = torch.from_numpy(budget.bound())
    steps = torch.from_numpy(per_pixel_steps(budget, cfg))
    view_bound = torch.from_numpy(budget.view_bound(n))
    x = torch.from_numpy(np.ascontiguousarray(views, np.float32))
    delta = torch.from_numpy(np.stack([random_start(np.random.default_rng(seed + k), budget, cfg) for k in range(members)]))
    velocity = torch.zeros_like(delta)
    losses = []
    for _ in range(cfg.iterations):
        draw = draw_diversity(rng, n, size, cfg)
        d = delta.detach().requires_grad_(True)
        cloaked = (x[None] + clip_to_budget(clip_to_budget(d, bound)[:, None], view_bound[None])).clamp(0, 1)
        theta = torch.from_numpy(draw.theta).repeat(members, 1, 1)
        batch = diversify(cloaked.reshape(members * n, 3, size, size), theta, draw.down_size)
        total = sum(joint_loss(embed(batch).reshape(members, n, -1), near, far, user, cfg.self_weight, separation)
                    for embed, (near, far, user) in zip(embedders, anchors)) / len(embedders)
        (grad,) = torch.autograd.grad(total, d)
        with torch.no_grad():
            velocity = cfg.momentum * velocity + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            delta = clip_to_budget(d - steps * velocity.sign(), bound)
        losses.append(float(total))
    return np.clip(delta.numpy(), -budget.bound(), budget.bound()).astype(np.float32), losses


def patched_optimise(separation: float, shared_views: int | None):
    def optimise_members(backend, views, budget, member_anchors, users, config, report):  # noqa: ANN001, ANN202 - the core's signature
        picked = slice(0, shared_views or len(views))
        names = list(users)
        anchors = [tuple(torch.from_numpy(np.asarray(v, np.float32)) for v in (
            np.stack([m[name].near for m in member_anchors])[:, None],
            np.stack([m[name].far for m in member_anchors])[:, None],
            users[name])) for name in names]
        deltas, losses = joint_pgd([torch_embedder(name) for name in names], anchors, views[picked], budget.of_views(picked),
                                   config.pgd, config.members, separation, config.seed)
        report("optimise", 1.0)
        return list(deltas), losses

    return optimise_members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--separation", type=float, default=3.0, help="weight of the members' mean pairwise cosine (0 = joint step alone)")
    parser.add_argument("--shared-views", type=int, default=None,
                        help="every member steps on the first N views (default all: K x the single-mask compute)")
    parser.add_argument("sets", nargs=argparse.REMAINDER, help="-- then bench/mask_sets.py's options")
    args = parser.parse_args()
    enroll.optimise_members = patched_optimise(args.separation, args.shared_views)
    sys.path.insert(0, str(Path(__file__).parent))
    import mask_sets

    sys.argv = [sys.argv[0], *(a for a in args.sets if a != "--")]
    mask_sets.main()


if __name__ == "__main__":
    main()

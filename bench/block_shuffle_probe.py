"""Exploratory probe: block shuffle and rotation (BSR) of every view, measured with the transfer ablation.

BSR (Wang et al., 2024) cuts each input into K x K blocks, shuffles them, rotates each by a random angle
and averages the gradient over such copies. Here every augmented view of a step, after the core's input
diversity, is cut into ``--blocks`` x ``--blocks`` blocks, shuffled and rotated by up to ``--max-angle``
degrees, with probability ``--prob`` per view (a new draw per view and step, torch's seeded generator).

This is a probe, not a core option: it patches ``facecloak.optimise.torch_step.diversify`` for this
process only (the benchmark enrolls on the PyTorch backend), so it does not reach the exported step
graph. Measured (docs/eval.md, "Transfer techniques"), it costs 33-45 points of protection: a face
recogniser has no answer for a face whose quarters are swapped, so the gradient through shuffled views
teaches the mask nothing that transfers. Everything after ``--`` goes to ``bench/transfer_ablation.py``
(one variant, ``base``, whose records land in OUTPUT/base):

    python bench/block_shuffle_probe.py --blocks 2 --max-angle 24 --prob 1 -- -o abl/B-bsr \\
        --ensemble facenet,ms1m,faceplugin --targets sface,sirius --variants base --people 24 --probes 4
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import facecloak.optimise.torch_step as torch_step
from facecloak.optimise.transforms import rotate


def block_shuffle_rotate(x: torch.Tensor, blocks: int, max_angle: float, prob: float) -> torch.Tensor:
    """(N, C, S, S) views -> each view, with probability ``prob``, cut into blocks x blocks, shuffled and rotated."""
    n, c, size, _ = x.shape
    side = size // blocks
    if side * blocks != size:
        raise SystemExit(f"--blocks {blocks} does not divide the view side {size}")
    tiles = x.reshape(n, c, blocks, side, blocks, side).permute(0, 2, 4, 1, 3, 5).reshape(n, blocks * blocks, c, side, side)
    order = torch.stack([torch.randperm(blocks * blocks) for _ in range(n)])
    tiles = tiles[torch.arange(n)[:, None], order]
    angles = (torch.rand(n * blocks * blocks) * 2 - 1) * math.radians(max_angle)
    tiles = rotate(tiles.reshape(-1, c, side, side), angles).reshape(n, blocks, blocks, c, side, side)
    shuffled = tiles.permute(0, 3, 1, 4, 2, 5).reshape(n, c, size, size)
    on = (torch.rand(n) < prob).to(x.dtype)[:, None, None, None]
    return on * shuffled + (1 - on) * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2, help="blocks per side (default 2)")
    parser.add_argument("--max-angle", type=float, default=24.0, help="largest block rotation in degrees (default 24)")
    parser.add_argument("--prob", type=float, default=1.0, help="share of views transformed per step (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="torch generator seed of the block draws")
    parser.add_argument("ablation", nargs=argparse.REMAINDER, help="-- then bench/transfer_ablation.py's options")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    plain = torch_step.diversify

    def diversify(*a, **kw) -> torch.Tensor:  # noqa: ANN002, ANN003 - passed through unchanged
        return block_shuffle_rotate(plain(*a, **kw), args.blocks, args.max_angle, args.prob)

    torch_step.diversify = diversify
    sys.path.insert(0, str(Path(__file__).parent))
    import transfer_ablation

    sys.argv = [sys.argv[0], *(a for a in args.ablation if a != "--")]
    transfer_ablation.main()


if __name__ == "__main__":
    main()

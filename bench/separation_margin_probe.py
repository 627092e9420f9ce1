"""Exploratory probe: a mask set's separation with a margin, measured with the mask-set benchmark.

The core's separation term is the members' mean pairwise cosine (``PGDConfig.member_separation``): it
keeps pushing members apart after they stopped linking, and every unit of that push is taken from the
push away from the user (the clean-gallery protection a set loses, docs/eval.md "Mask sets"). Here the
term becomes the mean over member pairs and views of max(0, cos(e_j, e_k) - margin): pairs already
below ``--margin`` stop pulling. ``--margin -1`` gives the core's gradient back (a check of the probe).

This is a probe, not a core option: it patches ``facecloak.optimise.torch_step.mean_pairwise_cosine``
for this process only (the benchmark enrolls on the PyTorch backend), so it does not reach the exported
step graph. Measured (docs/eval.md, "Mask sets"), it moves along the core's trade-off curve, not off it:
margin 0 changes nothing measurable, margin 0.2 acts like a lower weight. Everything after ``--`` goes to
``bench/mask_sets.py``:

    python bench/separation_margin_probe.py --margin 0 -- -o abl/margin0 --ensemble sface,ms1m,faceplugin \\
        --targets facenet,sirius --sets 4/v4 --people 16 --probes 4 --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import facecloak.optimise.torch_step as torch_step


def hinged_pairwise_cosine(emb: torch.Tensor, margin: float) -> torch.Tensor:
    """(K, N, D) embeddings -> mean over views and pairs j < k of max(0, cos(e_j, e_k) - margin)."""
    unit = F.normalize(emb, dim=-1)
    members = unit.shape[0]
    pairs = [(unit[j] * unit[k]).sum(dim=-1) for j in range(members) for k in range(j + 1, members)]
    return F.relu(torch.stack(pairs) - margin).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--margin", type=float, required=True, help="cosine below which a pair of members stops pulling")
    parser.add_argument("mask_sets", nargs=argparse.REMAINDER, help="-- then bench/mask_sets.py's options")
    args = parser.parse_args()
    torch_step.mean_pairwise_cosine = lambda emb: hinged_pairwise_cosine(emb, args.margin)
    sys.path.insert(0, str(Path(__file__).parent))
    import mask_sets

    sys.argv = [sys.argv[0], *(a for a in args.mask_sets if a != "--")]
    mask_sets.main()


if __name__ == "__main__":
    main()

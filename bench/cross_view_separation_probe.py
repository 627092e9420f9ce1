"""Exploratory probe: keep cloaked photos apart across views, not only across set members.

The cloaked-gallery attack compares two *different* photos of a user. The core's separation term
(``PGDConfig.member_separation``) only compares members on the *same* view, so it says nothing about
two photos that drew the same member: those land alike (one mask against itself, about 1/K of the
trials; docs/eval.md "Why the cloaked-gallery target is out of reach"). Here the term becomes the mean
cosine over every pair of the step's cloaked embeddings except an embedding with itself: members on the
same view (the core's pairs), members on different views, and one member on different views. For one
mask (K = 1, which the core leaves without a term) that is the mean cosine between its cloaked views, so
the mask is asked to send differently aligned, scaled and compressed copies of the photo to different
places rather than to one point.

This is a probe, not a core option: it patches ``facecloak.optimise.torch_step.cloak_loss`` for this
process only (the benchmark enrolls on the PyTorch backend), so it does not reach the exported step
graph. The separation weight is the variant's ``/sW`` in ``bench/mask_sets.py`` (the core's default when
absent, also for ``1``); ``1/s0`` is one mask exactly as the core learns it. Everything after ``--`` goes
to ``bench/mask_sets.py``:

    python bench/cross_view_separation_probe.py -- -o abl/crossview --ensemble sface,ms1m,faceplugin \\
        --targets facenet,sirius --sets 1/s0,1/s3,8/v2/s6 --people 16 --probes 4 --threads 2
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import facecloak.optimise.torch_step as torch_step
from facecloak.optimise.torch_step import SurrogateTarget

core_cloak_loss = torch_step.cloak_loss


def all_pairs_cosine(emb: torch.Tensor) -> torch.Tensor:
    """(K, N, D) or (N, D) embeddings -> mean cosine over ordered pairs of distinct rows of the flattened batch."""
    unit = F.normalize(emb.reshape(-1, emb.shape[-1]), dim=-1)
    count = unit.shape[0]
    total = unit.sum(dim=0)
    return ((total * total).sum() - (unit * unit).sum()) / (count * (count - 1))


def cross_view_cloak_loss(emb: torch.Tensor, target: SurrogateTarget, self_weight: float, separation: float = 0.0) -> torch.Tensor:
    """The core's loss without its separation term, plus ``separation`` x ``all_pairs_cosine``."""
    loss = core_cloak_loss(emb, target, self_weight, 0.0)
    rows = emb.shape[0] * emb.shape[1] if emb.dim() == 3 else emb.shape[0]
    return loss + separation * all_pairs_cosine(emb) if separation and rows > 1 else loss


def main() -> None:
    torch_step.cloak_loss = cross_view_cloak_loss
    sys.path.insert(0, str(Path(__file__).parent))
    import mask_sets

    sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--")]
    mask_sets.main()


if __name__ == "__main__":
    main()

"""What a viewer's eye passes of a cloak (issue 13): a visibility penalty the PGD step can descend.

NVIDIA's FLIP, the face-region visibility measure of the benchmark, first filters both images in an
opponent colour space with the human contrast sensitivity (Andersson et al. 2020, sec. 4.1): a narrow
low-pass on luminance and red-green, a wide one on blue-yellow. Energy the filters remove (fine,
pixel-scale alternation, above all in chroma) is invisible to it; energy they pass (blotches, coloured
speckle a few pixels wide) is what makes a pixel's FLIP error exceed 0.2. The penalty is that passed
energy of the delta alone, so it is photo-independent like the mask it shapes.

The gradient is written out (the filters are symmetric, zero-padded convolutions, hence self-adjoint),
so the exported step graph carries it as forward ops only.
"""

from __future__ import annotations

import torch

from .transforms import gaussian_blur

# Rows: luminance (the channel mean), red-green, blue-yellow; applied to an RGB delta per pixel.
OPPONENT = ((1 / 3, 1 / 3, 1 / 3), (1.0, -1.0, 0.0), (0.5, 0.5, -1.0))
# Gaussian sigma of each channel's contrast-sensitivity filter, in px of a 112 px frame: FLIP's filters
# (sigma^2 = b / (2 pi^2) degrees^2 with b = 0.0047, 0.0053, 0.04) at its default 67 px per degree,
# taking one frame px for one photo px (LFW faces span ~90-130 px).
CSF_SIGMA_AT_112 = (1.0, 1.1, 3.0)


def _opponent(dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(OPPONENT, dtype=dtype)


def _filtered(delta: torch.Tensor) -> list[torch.Tensor]:
    """Each opponent channel of a (3, S, S) delta through its CSF filter: three (1, S, S) tensors."""
    scale = delta.shape[-1] / 112
    opponent = torch.einsum("oc,chw->ohw", _opponent(delta.dtype), delta)
    return [gaussian_blur(opponent[i : i + 1], sigma * scale) for i, sigma in enumerate(CSF_SIGMA_AT_112)]


def visible_energy(delta: torch.Tensor) -> torch.Tensor:
    """Mean squared CSF-filtered opponent energy of a (3, S, S) delta (summed over the three channels)."""
    return sum(f.pow(2).mean() for f in _filtered(delta))


def visible_energy_gradient(delta: torch.Tensor) -> torch.Tensor:
    """d visible_energy / d delta, (3, S, S), without autograd: O^T [2 / S^2 G_i G_i o_i]."""
    scale = delta.shape[-1] / 112
    pixels = delta.shape[-1] * delta.shape[-2]
    back = torch.cat([gaussian_blur(f, sigma * scale) for f, sigma in zip(_filtered(delta), CSF_SIGMA_AT_112)])
    return torch.einsum("oc,ohw->chw", _opponent(delta.dtype), back) * (2 / pixels)

"""Differentiable input transforms for expectation over transformation (EOT): pure tensor functions.

Each is written with matrix products and element-wise ops only, so autograd's backward of it is plain
forward ops too and the exported step graph (ONNX, TensorRT, AOTInductor) carries it unchanged:

- ``rotate``: in-plane rotation as three shears (Paeth), each a per-row 1-D bilinear resampling.
  Recognisers align with their own detector's landmarks (or not at all: loose MTCNN-style crops), so
  the face reaches them a few degrees off our frame.
- ``jpeg_approx``: a JPEG round trip (4:2:0 chroma, 8x8 DCT, the IJG quality-scaled tables) with a
  rounding whose gradient is not zero (``round(v) + (v - round(v))^3``, Shin & Song 2017): every
  upload is JPEG-compressed, and the quantiser removes exactly the fine detail a cloak likes.
- ``spectrum_simulate``: spectrum simulation (SSA, Long et al. 2022): Gaussian noise in the pixels, then
  random gains on every coefficient of the whole-view DCT. Models trained on other data lean on other
  frequency bands; a gradient averaged over random spectra leans less on the surrogates' own.
"""

from __future__ import annotations

import math

import torch

# ITU T.81 Annex K example tables (the IJG defaults), row-major over (v, u).
LUMA_TABLE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
              14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
CHROMA_TABLE = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32))
BLOCK = 8


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur of (..., H, W) ``x`` with zero padding (so it is self-adjoint); identity for sigma <= 0."""
    if sigma <= 0:
        return x
    if x.dim() != 3:
        return gaussian_blur(x.reshape(-1, *x.shape[-2:]), sigma).reshape(x.shape)
    radius = max(1, int(round(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel_1d = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(x.shape[0], 1, -1, -1)
    return torch.nn.functional.conv2d(x[None], kernel, padding=radius, groups=x.shape[0])[0]


def tent_matrix(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear sampling as a matrix: (..., K) pixel coordinates -> (..., K, size) weights max(0, 1-|p-k|)."""
    taps = torch.arange(size, dtype=coords.dtype, device=coords.device)
    return torch.clamp(1 - (coords[..., None] - taps).abs(), min=0)


def shear_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each row of (N, C, H, W) ``x`` sideways by ``shift`` (N, H) pixels (bilinear, border padding)."""
    width = x.shape[-1]
    coords = (torch.arange(width, dtype=x.dtype) + shift[..., None]).clamp(0, width - 1)  # (N, H, W)
    weights = tent_matrix(coords, width)  # (N, H, Wout, Win)
    return (weights[:, None] @ x[..., None]).squeeze(-1)


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate (N, C, S, S) ``x`` about its centre by ``angle`` (N,) radians: x-shear, y-shear, x-shear.

    An angle of 0 is the identity exactly (every sampling coordinate is an integer).
    """
    size = x.shape[-1]
    centred = torch.arange(size, dtype=x.dtype) - (size - 1) / 2
    along = -torch.tan(angle / 2)[:, None] * centred  # (N, S): row y moves by a * (y - c)
    across = torch.sin(angle)[:, None] * centred
    x = shear_rows(x, along)
    x = shear_rows(x.transpose(-1, -2), across).transpose(-1, -2)
    return shear_rows(x, along)


def quality_table(base: tuple[int, ...], quality: int) -> torch.Tensor:
    """(8, 8) quantisation table of the IJG library at ``quality`` (1..100)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return torch.tensor([min(255, max(1, (q * scale + 50) // 100)) for q in base], dtype=torch.float32).reshape(BLOCK, BLOCK)


def dct_matrix(n: int = BLOCK) -> torch.Tensor:
    """(n, n) orthonormal DCT-II matrix: coefficients = D @ block @ D^T."""
    k = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


def spectrum_simulate(x: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """``IDCT(DCT(x + noise) * gains)`` per (N, C, S, S) view; ``spectrum`` (N, 2, C, S, S) holds the gains
    (index 0) and the pixel noise (index 1). Gains of 1 and zero noise give ``x`` up to rounding."""
    dct = dct_matrix(x.shape[-1]).to(x.dtype)
    return dct.T @ ((dct @ (x + spectrum[:, 1]) @ dct.T) * spectrum[:, 0]) @ dct


def _soft_round(v: torch.Tensor) -> torch.Tensor:
    rounded = torch.round(v)
    return rounded + (v - rounded) ** 3


def _quantise(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT, quantise, dequantise and invert the 8x8 blocks of (N, 1, H, W) ``plane`` (H, W multiples of 8)."""
    h, w = plane.shape[-2:]
    dct = dct_matrix().to(plane.dtype)
    rows = torch.block_diag(*[dct] * (h // BLOCK))
    cols = torch.block_diag(*[dct] * (w // BLOCK))
    steps = table.to(plane.dtype).repeat(h // BLOCK, w // BLOCK)
    coeffs = rows @ plane @ cols.T
    return rows.T @ (_soft_round(coeffs / steps) * steps) @ cols


def _halve(size: int) -> torch.Tensor:
    """(size/2, size) matrix averaging pixel pairs: 4:2:0 chroma subsampling along one axis."""
    return torch.repeat_interleave(torch.eye(size // 2), 2, dim=1) / 2


def jpeg_approx(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A differentiable JPEG round trip of (N, 3, H, W) RGB ``x`` in [0, 1] (H, W multiples of 16)."""
    h, w = x.shape[-2:]
    if h % (2 * BLOCK) or w % (2 * BLOCK):
        raise ValueError(f"the JPEG approximation needs sides that are multiples of 16, got {h}x{w}")
    r, g, b = (x[:, i : i + 1] * 255 for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    y = _quantise(y - 128, quality_table(LUMA_TABLE, quality)) + 128
    down_h, down_w = _halve(h).to(x.dtype), _halve(w).to(x.dtype)
    chroma_table = quality_table(CHROMA_TABLE, quality)
    cb, cr = (2 * down_h.T @ _quantise(down_h @ c @ down_w.T, chroma_table) @ (2 * down_w) for c in (cb, cr))
    rgb = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    return (rgb / 255).clamp(0, 1)


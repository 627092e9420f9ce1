"""Decomposition rules that turn autograd's backward kernels into standard ONNX-exportable ops.

``make_fx`` records the backward pass of ``pgd_step`` as aten backward kernels. The ONNX exporter
has no translation for several of them, so each is rewritten here into forward ops that have one:

- ``convolution_backward`` (input gradient only: the surrogate weights are frozen) is a transposed
  convolution with the same weight, stride, padding, dilation and groups.
- ``grid_sampler_2d_backward``: the diversity warps are scale + shift only (no rotation), so bilinear
  sampling with border padding is separable: out = My @ x @ Mx^T with 1-D "tent" weight matrices
  built from the sampling grid; its input gradient is My^T @ g @ Mx.
- ``upsample_bilinear2d_backward`` (the 112 -> 160 px resize inside FaceNet's embedder) is linear
  and separable too; its 1-D resampling matrices are materialised at trace time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch._decomp import decomposition_table

aten = torch.ops.aten


def _conv_input_grad(grad: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor, bias_sizes: Any, stride: list[int],
                     padding: list[int], dilation: list[int], transposed: bool, output_padding: list[int], groups: int,
                     output_mask: list[bool]) -> tuple[torch.Tensor | None, None, None]:
    if transposed or output_mask[1] or output_mask[2] or inp.dim() != 4:
        raise NotImplementedError("only the input gradient of a frozen 2-D convolution is exportable")
    kernel = weight.shape[2:]
    # The transposed convolution's output_padding recovers the rows/cols the forward stride dropped.
    extra = [inp.shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
             for i in range(2)]
    grad_in = F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups, dilation)
    return (grad_in if output_mask[0] else None), None, None


def tent_matrix(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear sampling as a matrix: (..., K) pixel coordinates -> (..., K, size) weights max(0, 1-|p-k|)."""
    taps = torch.arange(size, dtype=coords.dtype, device=coords.device)
    return torch.clamp(1 - (coords[..., None] - taps).abs(), min=0)


def _grid_sample_input_grad(grad: torch.Tensor, inp: torch.Tensor, grid: torch.Tensor, interpolation: int,
                            padding_mode: int, align_corners: bool, output_mask: list[bool]) -> tuple[torch.Tensor, None]:
    # interpolation 0 = bilinear, padding_mode 1 = border: what facecloak.optimise.diversify uses.
    if interpolation != 0 or padding_mode != 1 or align_corners or output_mask[1]:
        raise NotImplementedError("only bilinear/border/align_corners=False grid sampling w.r.t. its input is exportable")
    height, width = inp.shape[2:]
    # Separable grid: x depends only on the output column, y only on the output row.
    px = ((grid[:, 0, :, 0] + 1) * width - 1) / 2
    py = ((grid[:, :, 0, 1] + 1) * height - 1) / 2
    mx = tent_matrix(px.clamp(0, width - 1), width)  # (N, Wout, W); clamping = border padding
    my = tent_matrix(py.clamp(0, height - 1), height)  # (N, Hout, H)
    return my.transpose(1, 2)[:, None] @ grad @ mx[:, None], None


def resampling_matrix(out_size: int, in_size: int, resample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]) -> torch.Tensor:
    """(out, in) matrix of a separable linear 2-D resampler, measured on unit impulses in float64.

    The impulses are 2 px wide: torch's antialiased bilinear kernel mis-handles a 1 px wide input.
    """
    impulses = torch.eye(in_size, dtype=torch.float64).reshape(in_size, 1, in_size, 1).expand(-1, -1, -1, 2).contiguous()
    return resample(impulses, (out_size, 2))[:, 0, :, 0].T


def _upsample_bilinear_input_grad(grad: torch.Tensor, output_size: list[int], input_size: list[int], align_corners: bool,
                                  scales_h: float | None = None, scales_w: float | None = None) -> torch.Tensor:
    if scales_h is not None or scales_w is not None:
        raise NotImplementedError("bilinear upsampling by scale factor is not exportable; resize to a size")

    def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return aten.upsample_bilinear2d.default(x, list(size), align_corners)

    rows = resampling_matrix(output_size[0], input_size[2], resample).to(grad.dtype)
    cols = resampling_matrix(output_size[1], input_size[3], resample).to(grad.dtype)
    return rows.T @ grad @ cols


def export_decompositions() -> dict:
    """``torch.export.default_decompositions()`` plus the backward rules above."""
    table = torch.export.default_decompositions()
    table[aten.convolution_backward.default] = _conv_input_grad
    table[aten.grid_sampler_2d_backward.default] = _grid_sample_input_grad
    table[aten.upsample_bilinear2d_backward.default] = _upsample_bilinear_input_grad
    # Max-pool backward as a scatter-add over the forward's argmax indices (FaceNet's stem).
    table[aten.max_pool2d_with_indices_backward.default] = decomposition_table[aten.max_pool2d_with_indices_backward.default]
    return table

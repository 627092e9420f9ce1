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
- ``max_pool2d_with_indices`` and its backward: window maxima from strided slices, and the gradient
  routed to each window's first maximum by a one-hot transposed convolution (TensorRT cannot parse
  MaxPool's Indices output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from facecloak.optimise.transforms import tent_matrix

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


def _pool_windows(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int],
                  ceil_mode: bool) -> list[torch.Tensor]:
    """The k*k strided shifted views of -inf padded ``x`` that a max pool compares, row-major."""
    if any(d != 1 for d in dilation):
        raise NotImplementedError("dilated max pooling is not exportable")
    stride = stride or kernel
    out = []
    for i in range(2):
        span = x.shape[2 + i] + 2 * padding[i] - kernel[i]
        size = (-(-span // stride[i]) if ceil_mode else span // stride[i]) + 1
        # aten's rule: with ceil_mode the last window must start inside the input or left padding.
        out.append(size - 1 if ceil_mode and (size - 1) * stride[i] >= x.shape[2 + i] + padding[i] else size)
    extra = [(out[i] - 1) * stride[i] + kernel[i] - x.shape[2 + i] - padding[i] for i in range(2)]
    padded = F.pad(x, (padding[1], max(extra[1], 0), padding[0], max(extra[0], 0)), value=float("-inf"))
    return [padded[:, :, ki : ki + (out[0] - 1) * stride[0] + 1 : stride[0], kj : kj + (out[1] - 1) * stride[1] + 1 : stride[1]]
            for ki in range(kernel[0]) for kj in range(kernel[1])]


def _window_max(windows: list[torch.Tensor]) -> torch.Tensor:
    values = windows[0]
    for window in windows[1:]:
        values = torch.maximum(values, window)
    return values


def _max_pool_values(x: torch.Tensor, kernel: list[int], stride: list[int] = (), padding: list[int] = (0, 0),
                     dilation: list[int] = (1, 1), ceil_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    windows = _pool_windows(x, list(kernel), list(stride), list(padding), list(dilation), ceil_mode)
    values = _window_max(windows)
    # The argmax indices are never read: the backward rule below recomputes the winners from ``x``.
    # An empty placeholder keeps ONNX free of MaxPool's Indices output, which TensorRT rejects.
    return values, torch.empty(0, dtype=torch.int64)


def _max_pool_input_grad(grad: torch.Tensor, x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                         dilation: list[int], ceil_mode: bool, indices: torch.Tensor) -> torch.Tensor:
    windows = _pool_windows(x, list(kernel), list(stride), list(padding), list(dilation), ceil_mode)
    values = _window_max(windows)
    # Gradient to the FIRST maximal element of each window in row-major order, as aten's kernel does.
    taken = torch.zeros_like(grad, dtype=torch.bool)
    parts = []
    for window in windows:
        winner = (window == values) & ~taken
        taken = taken | winner
        parts.append(torch.where(winner, grad, torch.zeros_like(grad)))
    channels, taps = x.shape[1], len(windows)
    stacked = torch.stack(parts, dim=2).reshape(grad.shape[0], channels * taps, *grad.shape[2:])
    # One-hot transposed-convolution kernels put each tap's share back at its offset in the window.
    # (Built functionally: traced in-place writes into a constant confuse the ONNX constant folder.)
    scatter = torch.eye(taps, dtype=grad.dtype).reshape(taps, 1, kernel[0], kernel[1]).repeat(channels, 1, 1, 1)
    placed = F.conv_transpose2d(stacked, scatter, None, stride or kernel, 0, 0, channels)
    # Rows/cols past the last window get no gradient; pad them in before cropping the left padding off.
    short = [padding[i] + x.shape[2 + i] - placed.shape[2 + i] for i in range(2)]
    placed = F.pad(placed, (0, max(short[1], 0), 0, max(short[0], 0)))
    return placed[:, :, padding[0] : padding[0] + x.shape[2], padding[1] : padding[1] + x.shape[3]]


def export_decompositions() -> dict:
    """``torch.export.default_decompositions()`` plus the backward rules above."""
    table = torch.export.default_decompositions()
    table[aten.convolution_backward.default] = _conv_input_grad
    table[aten.grid_sampler_2d_backward.default] = _grid_sample_input_grad
    table[aten.upsample_bilinear2d_backward.default] = _upsample_bilinear_input_grad
    # FaceNet's max pools: window maxima and their gradient from strided slices, no Indices output.
    table[aten.max_pool2d_with_indices.default] = _max_pool_values
    table[aten.max_pool2d_with_indices_backward.default] = _max_pool_input_grad
    return table

"""The on-device add-and-clip op as a PyTorch module (the single source of the exported models).

Contract (the same for ONNX, Core ML and TFLite; docs/ondevice.md explains the choices):

- ``roi``    (1, h, w, 3) RGB, NHWC, the face region cropped from the camera frame. uint8 for ONNX and
  TFLite (phones hold interleaved 8-bit pixels, so there is nothing to convert); float32 0..255 for
  Core ML, whose ML Program multi-arrays have no uint8 type.
- ``mask``   (S, S, 3) float32, the mask delta on the 0..255 scale (file levels x quantum x 255), HWC.
  It is an input, not a weight: one model serves every user and the secret mask never ships in it.
- ``matrix`` (2, 3) float32, maps ROI pixel (x, y) to mask pixel coordinates (pixel centres on
  integers, as cv2.warpAffine with WARP_INVERSE_MAP). The 5-landmark similarity fit and the ROI
  offset are folded in beside the graph (a closed form of ~20 flops, see ondevice_reference).

Output: the cloaked ROI, same shape and dtype as ``roi``: round(roi + bilinear(mask)), clipped to
0..255, with the mask taken as zero outside its square (the server's warp_mask_to_photo/add_and_clip).
Only torch is imported here so the separate LiteRT export environment can load this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IO_DTYPES = ("uint8", "float32")
# grid_sample: one GridSample (ONNX) / resample (Core ML) op. gather: explicit bilinear from four row
# gathers of a zero-bordered mask; litert-torch lowers grid_sample to GATHER_ND with full-size
# constant index tensors (0.8 MB, slow), the explicit form to four small GATHERs.
SAMPLERS = ("grid_sample", "gather")
# Finite bound for sanitised matrix entries: keeps grid coordinates finite (no NaN reaches the sampler)
# while still sending every pixel of any sane frame outside the mask.
_MATRIX_BOUND = 1.0e4


@dataclass(frozen=True)
class OpConfig:
    """Shape and dtype choices baked into one exported model."""

    mask_size: int = 112
    io_dtype: str = "uint8"
    sampler: str = "grid_sample"

    def __post_init__(self) -> None:
        if not 8 <= self.mask_size <= 1024:
            raise ValueError(f"mask_size must be in 8..1024, got {self.mask_size}")
        if self.io_dtype not in IO_DTYPES:
            raise ValueError(f"io_dtype must be one of {IO_DTYPES}, got {self.io_dtype!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")


class AddAndClip(torch.nn.Module):
    """cloaked_roi = clip(round(roi + warp(mask, matrix)), 0, 255)."""

    def __init__(self, config: OpConfig = OpConfig()) -> None:
        super().__init__()
        self.config = config

    def forward(self, roi: torch.Tensor, mask: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        # NaN -> a huge finite entry: a garbage transform then samples outside the mask (adds zero);
        # a NaN mask value adds zero. No NaN can reach the output, which stays within 0..255.
        matrix = torch.clamp(_replace_nan(matrix, _MATRIX_BOUND), -_MATRIX_BOUND, _MATRIX_BOUND)
        mask = torch.clamp(_replace_nan(mask, 0.0), -255.0, 255.0)
        # Explicit base grid from the dynamic ROI size (affine_grid with a dynamic size does not convert
        # to Core ML). Constants join the 1-D ramps before the (h, w) broadcast.
        xs = _index_ramp(roi[0, 0, :, 0]).reshape(1, -1)
        ys = _index_ramp(roi[0, :, 0, 0]).reshape(-1, 1)
        size = self.config.mask_size
        if self.config.sampler == "grid_sample":
            # grid_sample wants [-1, 1] coordinates; with align_corners=False pixel centre i sits at
            # (2i + 1) / S - 1. Scaling the 2x3 matrix instead of the grid saves two full-size passes.
            matrix = matrix * (2.0 / size) + torch.tensor([[0.0, 0.0, 1.0 / size - 1.0]] * 2)
        u = (matrix[0, 0] * xs + matrix[0, 2]) + matrix[0, 1] * ys
        v = (matrix[1, 0] * xs + matrix[1, 2]) + matrix[1, 1] * ys
        sample = _sample_grid if self.config.sampler == "grid_sample" else _sample_gather
        warped = sample(mask, u, v, size)
        total = roi.to(torch.float32) + warped
        out = torch.clamp(torch.round(total), 0.0, 255.0)
        return out.to(torch.uint8) if self.config.io_dtype == "uint8" else out


def _sample_grid(mask: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, zero outside, via grid_sample at normalised (u, v); returns (1, h, w, 3)."""
    grid = torch.stack([u, v], dim=-1)
    warped = F.grid_sample(mask.permute(2, 0, 1).unsqueeze(0), grid.unsqueeze(0), mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    return warped.permute(0, 2, 3, 1)


def _sample_gather(mask: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: int) -> torch.Tensor:
    """The same bilinear sample at mask pixel (u, v) from four row gathers of the mask with a zero border."""
    side = size + 2
    table = F.pad(mask.permute(2, 0, 1), (1, 1, 1, 1)).permute(1, 2, 0).reshape(side * side, 3)
    # Shift into the bordered table and clamp: anything beyond the border samples zeros only.
    u = torch.clamp(u + 1.0, 0.0, size + 1.0)
    v = torch.clamp(v + 1.0, 0.0, size + 1.0)
    x0 = torch.clamp(torch.floor(u), max=float(size))
    y0 = torch.clamp(torch.floor(v), max=float(size))
    fx, fy = (u - x0).unsqueeze(-1), (v - y0).unsqueeze(-1)
    top_left = (y0 * side + x0).to(torch.int32).reshape(-1)
    h, w = u.shape

    def corner(offset: int) -> torch.Tensor:
        return table[top_left + offset].reshape(h, w, 3)

    top = corner(0) + fx * (corner(1) - corner(0))
    bottom = corner(side) + fx * (corner(side + 1) - corner(side))
    return (top + fy * (bottom - top)).unsqueeze(0)


def _replace_nan(x: torch.Tensor, value: float) -> torch.Tensor:
    """NaN -> value (infinities are clamped by the caller).

    The fill is computed from the input, not a constant: Core ML rejects where() with a scalar
    operand, and a constant would be broadcast into a full-size weight blob in the model.
    """
    valid = x == x
    return torch.where(valid, x, valid.to(torch.float32) * 0.0 + value)


def _index_ramp(line: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., n-1 as float32 for a 1-D tensor of dynamic length n.

    A cumulative sum of ones rather than arange: litert-torch cannot lower arange with a symbolic end.
    Exact for n < 2**24.
    """
    return torch.cumsum(torch.ones_like(line, dtype=torch.float32), dim=0) - 1.0


def example_inputs(config: OpConfig, height: int = 96, width: int = 80) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of the right dtypes for tracing/export (values are irrelevant)."""
    roi_dtype = torch.uint8 if config.io_dtype == "uint8" else torch.float32
    roi = torch.zeros((1, height, width, 3), dtype=roi_dtype)
    mask = torch.zeros((config.mask_size, config.mask_size, 3), dtype=torch.float32)
    matrix = torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.5, 2.0]], dtype=torch.float32)
    return roi, mask, matrix

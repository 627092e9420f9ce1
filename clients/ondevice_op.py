"""The on-device op as PyTorch modules (the single source of the exported models).

Contract of the fused op (ONNX and Core ML; docs/ondevice.md explains the choices):

- ``roi``    (1, h, w, 3) RGB, NHWC, the face region cropped from the camera frame. uint8 for ONNX and
  TFLite (phones hold interleaved 8-bit pixels, so there is nothing to convert); float32 0..255 for
  Core ML, whose ML Program multi-arrays have no uint8 type.
- ``mask``   (S, S, 3) float32, the mask delta on the 0..255 scale (file levels x quantum x 255), HWC.
  It is an input, not a weight: one model serves every user and the secret mask never ships in it.
- ``matrix`` (2, 3) float32, maps ROI pixel (x, y) to mask pixel coordinates (pixel centres on
  integers, as cv2.warpAffine with WARP_INVERSE_MAP). The 5-landmark similarity fit and the ROI
  offset are folded in beside the graph (a closed form of ~20 flops, see ondevice_reference).
- ``budget`` (3,) float32, the mask file's perceptual budget: eps on the 0..255 scale, floor,
  contrast (cloak.optimise.perceptual). A mask without one (format 1/2) passes NO_BUDGET
  (255, 1, 1): the allowed amplitude is then 255 everywhere and the clip is a no-op.

Output: the cloaked ROI, same shape and dtype as ``roi``: round(roi + bilinear(clipped mask)), clipped
to 0..255, with the mask taken as zero outside its square. ``clipped mask`` is the mask clipped per
pixel to the amplitude the photo allows, computed in the mask's frame from the ROI sampled at the
frame's pixel centres (the server's delta_for_photo + warp_mask_to_photo + add_and_clip).

The fused op is three stages, also exported separately for TFLite, whose fixed-size tiles never see
the whole face: FrameSample (run per tile, partial sums added by the host), BudgetClip (once per
face, S x S) and AddAndClip (per tile, unchanged). Only torch is imported here so the separate
LiteRT export environment can load this module.
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
_MIN_DET = 1.0e-20  # |determinant| floor of the frame sample's inverse (see sample_frame)
# The budget input for masks without a perceptual budget (format 1/2): eps 255, floor 1 -> allowed 255
# everywhere, and the mask is already clamped to +-255, so the clip changes nothing.
NO_BUDGET = (255.0, 1.0, 1.0)
LUMA = (0.299, 0.587, 0.114)  # BT.601, as optimise.perceptual.LUMA
WINDOW_AT_112 = 5  # optimise.perceptual.WINDOW_AT_112 (not imported: that module needs numpy and cv2)


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
        # A NaN mask value adds zero (and a NaN transform samples outside the mask, see add).
        return self.add(roi, _sanitise_mask(mask), matrix)

    def add(self, roi: torch.Tensor, mask: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """forward for a mask that is already finite and within +-255 (the fused op's clipped mask)."""
        # NaN -> a huge finite entry: a garbage transform then samples outside the mask (adds zero).
        # No NaN can reach the output, which stays within 0..255.
        matrix = _sanitise_matrix(matrix)
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


def window_size(size: int) -> int:
    """optimise.perceptual.window_size, restated: the local-contrast box for an S px frame (tested equal)."""
    return max(3, int(round(WINDOW_AT_112 * size / 112)) | 1)


class CloakOp(torch.nn.Module):
    """cloaked_roi = AddAndClip(roi, BudgetClip(FrameSample(roi), mask, budget), matrix): one model per format.

    The frame sample is 4 S^2 gathers from the ROI and the budget O(S^2) arithmetic: the cost over the
    plain add-and-clip is fixed, whatever the ROI size.
    """

    def __init__(self, config: OpConfig = OpConfig()) -> None:
        super().__init__()
        self.config = config
        self.add_and_clip = AddAndClip(config)

    def forward(self, roi: torch.Tensor, mask: torch.Tensor, matrix: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        mask = _sanitise_mask(mask)
        # The whole ROI is one tile at the origin; its size is counted in-graph (dynamic). The frame ramp
        # comes from a line of the mask input: Core ML would fold a computed constant into a weight
        # blob, and the op ships without weights.
        extent = _extent(roi)
        frame = sample_frame(roi, _sanitise_matrix(matrix), 0.0, extent, mask[:, 0, 0], self.config.mask_size)
        return self.add_and_clip.add(roi, budget_clip(frame, mask, budget, self.config.mask_size), matrix)


class FrameSample(torch.nn.Module):
    """TFLite stage 1, per tile: this tile's share of the ROI sampled at the frame's pixel centres, (3, S, S).

    ``matrix`` maps ROI (not tile) pixels to mask pixels; ``window`` is (tx, ty, W, H): the tile's
    origin in the ROI and the ROI's size. The host adds the partial frames of all tiles.
    """

    def __init__(self, config: OpConfig = OpConfig()) -> None:
        super().__init__()
        self.config = config

    def forward(self, tile: torch.Tensor, matrix: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        size = self.config.mask_size
        line = torch.ones(size, dtype=torch.float32)  # a constant is fine in TFLite
        origin, extent = window[:2].reshape(2, 1, 1), window[2:].reshape(2, 1, 1)
        return sample_frame(tile, _sanitise_matrix(matrix), origin, extent, line, size)


class BudgetClip(torch.nn.Module):
    """TFLite stage 2, once per face: (summed frame, mask, budget) -> the mask clipped to the photo's budget."""

    def __init__(self, config: OpConfig = OpConfig()) -> None:
        super().__init__()
        self.config = config

    def forward(self, frame: torch.Tensor, mask: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        return budget_clip(frame, _sanitise_mask(mask), budget, self.config.mask_size)


def sample_frame(roi: torch.Tensor, matrix: torch.Tensor, origin: float | torch.Tensor, extent: torch.Tensor,
                 line: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear sample of ``roi`` at every frame pixel centre, (3, S, S) float32 on the 0..255 scale.

    The server warps the photo into the frame (cv2.warpAffine, INTER_LINEAR, BORDER_REPLICATE). Here
    frame pixel (i, j) sits at inverse(matrix) . (i, j, 1) in the ROI; the inverse is the closed form
    of the 2x3 affine, in-graph, so every format takes the one ``matrix`` the add-and-clip uses and no
    second, possibly inconsistent, transform. Taps are clamped to the ROI (``extent`` (2, 1, 1) = its
    W, H), which is the photo's replicated border wherever the ROI was clipped to the photo, and lie
    inside it elsewhere. Only taps inside ``roi`` (a tile at ``origin`` (tx, ty) of the ROI)
    contribute, so the sums over all tiles are the whole sample. ``line`` is any length-S tensor.
    Coordinates stay stacked, (2, S, S) with x first: few, whole-array ops instead of many scalar ones.
    """
    linear, shift = matrix[:, :2], matrix[:, 2:]
    # 2x2 inverse in closed form: adj(A) = trace(A) I - A, det(A) = A[0] . adj(A)[:, 0].
    trace = linear[0, 0] + linear[1, 1]
    adjugate = trace * torch.tensor([[1.0, 0.0], [0.0, 1.0]]) - linear
    det = (linear[0] * adjugate[:, 0]).sum()
    # ``matrix`` is sanitised (finite, |entries| <= 1e4); a singular one gets a tiny determinant, so the
    # positions stay finite (at most ~1e28) and the clamps below bring them into the ROI.
    regular = (torch.abs(det) >= _MIN_DET).to(torch.float32)  # arithmetic select: Core ML has no scalar where
    det = det * regular + _MIN_DET * (1.0 - regular)
    inverse = adjugate / det
    offset = -(inverse[:, :1] * shift[0] + inverse[:, 1:] * shift[1])  # (2, 1)
    ramp = _index_ramp(line)
    xs, ys = ramp.reshape(1, 1, size), ramp.reshape(1, size, 1)
    position = inverse[:, :1].unsqueeze(-1) * xs + inverse[:, 1:].unsqueeze(-1) * ys + offset.unsqueeze(-1)
    last = extent - 1.0
    position = torch.minimum(torch.clamp(position, min=0.0), last)
    near = torch.floor(position)
    frac = position - near
    # Both taps per axis (near, near + 1 clamped: the replicated border), in tile coordinates.
    taps = torch.stack([near, torch.minimum(near + 1.0, last)]) - origin  # (2 taps, 2 axes, S, S)
    tile = _extent(roi)
    inside = torch.logical_and(taps >= 0.0, taps < tile).to(torch.float32)
    taps = torch.minimum(torch.clamp(taps, min=0.0), tile - 1.0)
    weight = torch.stack([1.0 - frac, frac]) * inside
    # (y tap, x tap) pairs: flat index row * width + column, weight wy * wx.
    index = taps[:, 1].unsqueeze(1) * tile[0] + taps[:, 0].unsqueeze(0)
    weight = (weight[:, 1].unsqueeze(1) * weight[:, 0].unsqueeze(0)).reshape(4, 1, size * size)
    pixels = roi.reshape(-1, 3)[index.to(torch.int32).reshape(-1)]  # (4 S^2, 3): one Gather
    # Channel-first from here: every broadcast runs over a leading axis (ONNX Runtime is ~20x slower
    # broadcasting over a trailing axis of 1, e.g. (S, S, 3) * (S, S, 1)).
    weighted = pixels.reshape(4, size * size, 3).permute(0, 2, 1).to(torch.float32) * weight
    return (weighted[0] + weighted[1] + weighted[2] + weighted[3]).reshape(3, size, size)


def _extent(roi: torch.Tensor) -> torch.Tensor:
    """(2, 1, 1) float32: the width and height of an NHWC tensor, counted in-graph (dynamic sizes)."""
    width = torch.ones_like(roi[0, 0, :, 0], dtype=torch.float32).sum(0, keepdim=True)
    height = torch.ones_like(roi[0, :, 0, 0], dtype=torch.float32).sum(0, keepdim=True)
    return torch.cat([width, height]).reshape(2, 1, 1)


def budget_clip(frame: torch.Tensor, mask: torch.Tensor, budget: torch.Tensor, size: int) -> torch.Tensor:
    """``mask`` (S, S, 3, 0..255 scale) clipped per pixel to optimise.perceptual.allowed_amplitude of ``frame``
    (3, S, S), the frame sample.

    allowed = eps * (floor + (1 - floor) * min(1, std / contrast)), std the luma's standard deviation
    in a ``window_size`` box with BORDER_REFLECT_101 (cv2.blur's border), luma BT.601 of the frame
    rounded to whole levels as the server's uint8 warp is.
    """
    radius = window_size(size) // 2
    face = torch.floor(torch.clamp(frame, 0.0, 255.0) + 0.5)  # floor, not Round: ONNX fuses the one final Round
    luma = (face[0] * LUMA[0] + face[1] * LUMA[1] + face[2] * LUMA[2]) * (1.0 / 255.0)
    padded = _reflect_101(_reflect_101(luma, 0, radius, size), 1, radius, size)
    both = torch.stack([padded, padded * padded]).unsqueeze(0)
    box = F.avg_pool2d(both, window_size(size), stride=1)
    mean, square = box[0, 0], box[0, 1]
    std = torch.sqrt(torch.clamp(square - mean * mean, min=0.0))
    eps, floor, contrast = _sanitise_budget(budget)
    texture = torch.clamp(std / contrast, max=1.0)
    allowed = eps * (floor + (1.0 - floor) * texture)
    # Same-shape (3, S, S) operands: ONNX Runtime's transpose optimizer turns a broadcast next to the
    # permute into (S, S, 3) against (S, S, 1), its ~20x slower trailing-axis broadcast.
    allowed = torch.stack([allowed, allowed, allowed])
    return torch.maximum(torch.minimum(mask.permute(2, 0, 1), allowed), -allowed).permute(1, 2, 0)


def _reflect_101(x: torch.Tensor, dim: int, radius: int, size: int) -> torch.Tensor:
    """``x`` (``size`` long along ``dim``) padded by ``radius`` on both sides of ``dim`` with cv2's
    BORDER_REFLECT_101 (the edge is not repeated).

    Static slices and a concat: every converter lowers them (litert has no reflect pad to rely on; Core
    ML folds them into pad(mode="reflect")), and ONNX Runtime runs them far faster than a Gather
    along the inner axis.
    """
    left = [x.narrow(dim, i, 1) for i in range(radius, 0, -1)]
    right = [x.narrow(dim, size - 1 - i, 1) for i in range(1, radius + 1)]
    return torch.cat([*left, x, *right], dim=dim)


def _sanitise_budget(budget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """eps in 0..255, floor in 0..1, contrast in 1e-6..1: the allowed amplitude is then finite and in
    0..255 everywhere, without a per-pixel guard. A NaN eps or floor allows nothing; a NaN contrast is 1."""
    valid = budget == budget
    budget = torch.where(valid, budget, valid.to(torch.float32) * 0.0 + torch.tensor([0.0, 0.0, 1.0]))
    budget = torch.minimum(torch.maximum(budget, torch.tensor([0.0, 0.0, 1.0e-6])), torch.tensor([255.0, 1.0, 1.0]))
    return budget[0], budget[1], budget[2]


def _sanitise_matrix(matrix: torch.Tensor) -> torch.Tensor:
    return torch.clamp(_replace_nan(matrix, _MATRIX_BOUND), -_MATRIX_BOUND, _MATRIX_BOUND)


def _sanitise_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.clamp(_replace_nan(mask, 0.0), -255.0, 255.0)


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


def cloak_example_inputs(config: OpConfig, height: int = 96, width: int = 80) -> tuple[torch.Tensor, ...]:
    """CloakOp inputs (roi, mask, matrix, budget) of the right dtypes for tracing/export."""
    return (*example_inputs(config, height, width), torch.tensor(NO_BUDGET, dtype=torch.float32))


def sample_example_inputs(config: OpConfig, tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FrameSample inputs (tile, matrix, window) for a fixed tile x tile export."""
    roi, _, matrix = example_inputs(config, tile, tile)
    return roi, matrix, torch.tensor([0.0, 0.0, float(tile), float(tile)])


def budget_example_inputs(config: OpConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BudgetClip inputs (frame, mask, budget)."""
    frame = torch.zeros((3, config.mask_size, config.mask_size), dtype=torch.float32)
    mask = torch.zeros((config.mask_size, config.mask_size, 3), dtype=torch.float32)
    return frame, mask, torch.tensor(NO_BUDGET, dtype=torch.float32)

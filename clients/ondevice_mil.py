"""Check a Core ML ML Program on Linux, where Core ML cannot predict: read the spec back, whitelist its
ops, check the interface, and evaluate the MIL program with a small numpy interpreter.

The interpreter implements only the ops the export uses (the perceptual budget and the add-and-clip),
each from the MIL op reference semantics (not from the torch source), so it is an independent check
of the conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ALLOWED_OPS = frozenset({
    "const", "cast", "equal", "select", "clip", "slice_by_index", "fill_like", "cumsum", "sub", "add", "mul",
    "reshape", "stack", "expand_dims", "transpose", "resample", "round",
    # the perceptual budget: frame sample (gathers), luma box statistics, per-pixel clip
    "real_div", "floor", "abs", "sqrt", "minimum", "maximum", "greater_equal", "less", "logical_and",
    "reduce_sum", "gather", "concat", "avg_pool", "pad",
})
_DTYPES = {"FLOAT32": np.float32, "INT32": np.int32, "BOOL": np.bool_}


class CoreMLCheckError(AssertionError):
    """The Core ML package does not have the expected structure."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[object, ...]  # ints, or (lower, upper) for a ranged dimension


def load_program(path: Path):
    """The ML Program spec of an .mlpackage (no Core ML runtime needed)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise CoreMLCheckError(f"{path} is not an ML Program")
    return spec


def interface(spec) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Model inputs and outputs as (name, dtype, shape) read from the spec description."""
    from coremltools.proto import FeatureTypes_pb2 as ft

    def describe(feature) -> TensorSpec:
        array = feature.type.multiArrayType
        dtype = ft.ArrayFeatureType.ArrayDataType.Name(array.dataType)
        if array.WhichOneof("ShapeFlexibility") == "shapeRange":
            shape = tuple((r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges)
        else:
            shape = tuple(array.shape)
        return TensorSpec(feature.name, dtype, shape)

    return [describe(f) for f in spec.description.input], [describe(f) for f in spec.description.output]


def operations(spec) -> list:
    function = spec.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


def check_ops(spec) -> set[str]:
    """The op types in the program; CoreMLCheckError naming any op outside the whitelist."""
    used = {op.type for op in operations(spec)}
    unexpected = used - ALLOWED_OPS
    if unexpected:
        raise CoreMLCheckError(f"unexpected MIL ops: {sorted(unexpected)}")
    return used


def _const(op) -> object:
    value = op.attributes["val"]
    if value.WhichOneof("value") != "immediateValue":
        raise CoreMLCheckError(f"const {op.outputs[0].name} is stored in a blob; the op should have no weights")
    tensor = value.immediateValue.tensor
    kind = tensor.WhichOneof("value")
    dtype_name = _dtype_name(value.type.tensorType.dataType)
    if kind == "strings":
        values = list(tensor.strings.values)
        return values[0] if value.type.tensorType.rank == 0 else values
    raw = {"floats": tensor.floats.values, "ints": tensor.ints.values, "bools": tensor.bools.values}[kind]
    shape = [d.constant.size for d in value.type.tensorType.dimensions]
    return np.array(list(raw), dtype=_DTYPES[dtype_name]).reshape(shape)


def _dtype_name(code: int) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(code)


def _slice(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None, **_):
    """MIL slice_by_index: masks default to all False, stride to 1."""
    rank = x.ndim
    stride = [1] * rank if stride is None else [int(s) for s in stride]
    begin_mask = [False] * rank if begin_mask is None else begin_mask
    end_mask = [False] * rank if end_mask is None else end_mask
    squeeze_mask = [False] * rank if squeeze_mask is None else squeeze_mask
    index = []
    for axis in range(rank):
        if squeeze_mask[axis]:
            index.append(int(begin[axis]))
        else:
            start = None if begin_mask[axis] else int(begin[axis])
            stop = None if end_mask[axis] else int(end[axis])
            index.append(slice(start, stop, stride[axis]))
    return np.asarray(x[tuple(index)])


def _cumsum(x, axis, exclusive, reverse, **_):
    if exclusive or reverse:
        raise CoreMLCheckError("cumsum with exclusive/reverse is not used by the op")
    return np.cumsum(x, axis=int(axis), dtype=x.dtype)


def _resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners, **_):
    """MIL resample: bilinear, constant padding, coordinates normalised to [-1, 1] (x first)."""
    if (sampling_mode, padding_mode, coordinates_mode) != ("bilinear", "constant", "normalized_minus_one_to_one"):
        raise CoreMLCheckError(f"resample mode {sampling_mode}/{padding_mode}/{coordinates_mode} not supported here")
    _, channels, height, width = x.shape
    gx, gy = coordinates[0, ..., 0].astype(np.float64), coordinates[0, ..., 1].astype(np.float64)
    if align_corners:
        u, v = (gx + 1) * (width - 1) / 2, (gy + 1) * (height - 1) / 2
    else:
        u, v = ((gx + 1) * width - 1) / 2, ((gy + 1) * height - 1) / 2
    x0, y0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fx, fy = u - x0, v - y0
    out = np.zeros((channels,) + u.shape, dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = x[0][:, np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
            out += np.where(inside, values, float(padding_value)) * (wx * wy)
    return out[None].astype(x.dtype)


def _gather(x, indices, axis, batch_dims=0, **_):
    if int(batch_dims) != 0:
        raise CoreMLCheckError("gather with batch_dims is not used by the op")
    indices = np.asarray(indices).astype(np.int64)
    if indices.size and (indices.min() < -x.shape[int(axis)] or indices.max() >= x.shape[int(axis)]):
        raise CoreMLCheckError("gather index out of range")  # Core ML's behaviour is undefined there
    return np.take(x, indices, axis=int(axis))


def _avg_pool(x, kernel_sizes, strides, pad_type, pad=None, ceil_mode=False, **_):
    """MIL avg_pool without padding (the op pads itself, by reflection): a window mean per output pixel."""
    if pad_type not in ("valid", "custom") or (pad is not None and np.any(np.asarray(pad) != 0)) or ceil_mode:
        raise CoreMLCheckError(f"avg_pool with pad_type {pad_type}/pad {pad} is not used by the op")
    kh, kw = (int(k) for k in kernel_sizes)
    sh, sw = (int(s) for s in strides)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(-2, -1))[..., ::sh, ::sw, :, :]
    return windows.mean(axis=(-2, -1), dtype=np.float64).astype(x.dtype)


def _pad(x, pad, mode="constant", constant_val=0.0, **_):
    """MIL pad: ``pad`` holds (before, after) pairs for the last len(pad) / 2 axes. The converter folds
    the op's slice + concat reflection into mode "reflect" (the edge is not repeated: cv2's REFLECT_101)."""
    pad = [int(v) for v in np.asarray(pad).reshape(-1)]
    widths = [(0, 0)] * (x.ndim - len(pad) // 2) + list(zip(pad[::2], pad[1::2]))
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=float(constant_val))
    if mode not in ("reflect", "replicate"):
        raise CoreMLCheckError(f"pad mode {mode!r} is not used by the op")
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def _reduce_sum(x, axes=None, keep_dims=False, **_):
    axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
    return np.sum(x, axis=axes, keepdims=bool(keep_dims), dtype=x.dtype)


def _concat(values, axis, interleave=False, **_):
    if interleave:
        raise CoreMLCheckError("concat with interleave is not used by the op")
    return np.concatenate(values, axis=int(axis))


_KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "equal": lambda x, y, **_: np.equal(x, y),
    "cast": lambda x, dtype, **_: np.asarray(x).astype({"fp32": np.float32, "int32": np.int32, "bool": np.bool_}[dtype]),
    "select": lambda cond, a, b, **_: np.where(cond, a, b).astype(np.result_type(a, b)),
    "clip": lambda x, alpha, beta, **_: np.clip(x, alpha, beta).astype(x.dtype),
    "slice_by_index": _slice,
    "fill_like": lambda ref_tensor, value, **_: np.full(np.shape(ref_tensor), value, dtype=np.asarray(value).dtype),
    "cumsum": _cumsum,
    "sub": lambda x, y, **_: np.subtract(x, y),
    "add": lambda x, y, **_: np.add(x, y),
    "mul": lambda x, y, **_: np.multiply(x, y),
    "reshape": lambda x, shape, **_: np.reshape(x, [int(s) for s in shape]),
    "stack": lambda values, axis, **_: np.stack(values, axis=int(axis)),
    "expand_dims": lambda x, axes, **_: np.expand_dims(x, tuple(int(a) for a in axes)),
    "transpose": lambda x, perm, **_: np.transpose(x, [int(p) for p in perm]),
    "resample": _resample,
    "real_div": lambda x, y, **_: np.divide(x, y),
    "floor": lambda x, **_: np.floor(x),
    "abs": lambda x, **_: np.abs(x),
    "sqrt": lambda x, **_: np.sqrt(x),
    "minimum": lambda x, y, **_: np.minimum(x, y),
    "maximum": lambda x, y, **_: np.maximum(x, y),
    "greater_equal": lambda x, y, **_: np.greater_equal(x, y),
    "less": lambda x, y, **_: np.less(x, y),
    "logical_and": lambda x, y, **_: np.logical_and(x, y),
    "reduce_sum": _reduce_sum,
    "gather": _gather,
    "concat": _concat,
    "avg_pool": _avg_pool,
    "pad": _pad,
    # MIL documents round as "nearest integer" without naming the tie rule; ties need an exact .5 sum,
    # which the 1-level tolerance covers either way.
    "round": lambda x, **_: np.round(x),
}


def evaluate(spec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the program's main function on numpy inputs; returns its outputs by name."""
    env: dict[str, object] = dict(feeds)
    for op in operations(spec):
        if op.type == "const":
            env[op.outputs[0].name] = _const(op)
            continue
        kernel = _KERNELS.get(op.type)
        if kernel is None:
            raise CoreMLCheckError(f"no numpy kernel for MIL op {op.type!r}")
        args = {}
        for key, binding in op.inputs.items():
            names = [arg.name for arg in binding.arguments]
            args[key] = [env[n] for n in names] if key == "values" else env[names[0]]
        env[op.outputs[0].name] = kernel(**args)
    function = spec.mlProgram.functions["main"]
    outputs = function.block_specializations[function.opset].outputs
    return {name: np.asarray(env[name]) for name in outputs}

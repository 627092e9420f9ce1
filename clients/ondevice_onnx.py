"""ONNX export of the on-device op (CloakOp: budget + add-and-clip), with one speed rewrite for ONNX Runtime Mobile."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .ondevice_op import CloakOp, OpConfig, cloak_example_inputs

OPSET = 17  # GridSample needs >= 16; 17 runs on every ONNX Runtime Mobile release since 1.13


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def fuse_round_clip_cast(model: onnx.ModelProto) -> int:
    """Replace Round -> Clip(0, 255) -> Cast(uint8) by one QuantizeLinear(scale 1, zero point 0).

    Same result (QuantizeLinear rounds half to even, like Round, and saturates to 0..255) in one pass
    over the ROI instead of three. Returns how many chains were fused.
    """
    graph = model.graph
    consts = _constant_values(graph)
    producers = {out: node for node in graph.node for out in node.output}
    fused = 0
    for cast in [n for n in graph.node if n.op_type == "Cast"]:
        if helper.get_attribute_value(cast.attribute[0]) != onnx.TensorProto.UINT8:
            continue
        clip = producers.get(cast.input[0])
        if clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        low, high = consts.get(clip.input[1]), consts.get(clip.input[2])
        rounding = producers.get(clip.input[0])
        if low is None or high is None or float(low) != 0.0 or float(high) != 255.0 or rounding is None or rounding.op_type != "Round":
            continue
        prefix = f"fused_quantize_{fused}"
        graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), f"{prefix}_scale"),
                                  numpy_helper.from_array(np.array(0, np.uint8), f"{prefix}_zero")])
        quantize = helper.make_node("QuantizeLinear", [rounding.input[0], f"{prefix}_scale", f"{prefix}_zero"],
                                    list(cast.output), name=prefix)
        index = list(graph.node).index(cast)
        for node in (cast, clip, rounding):
            graph.node.remove(node)
        graph.node.insert(index - 2, quantize)
        fused += 1
    _drop_unused_constants(graph)
    return fused


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)


def export_onnx(path: Path, mask_size: int = 112) -> Path:
    """ONNX opset 17 (GridSample), uint8 NHWC ROI of dynamic size; runs on ONNX Runtime Mobile.

    Inputs roi, mask, matrix, budget (ondevice_op.CloakOp); output cloaked.
    """
    import torch

    config = OpConfig(mask_size=mask_size, io_dtype="uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            CloakOp(config).eval(), cloak_example_inputs(config), str(path), input_names=["roi", "mask", "matrix", "budget"],
            output_names=["cloaked"], dynamic_axes={"roi": {1: "height", 2: "width"}, "cloaked": {1: "height", 2: "width"}},
            opset_version=OPSET, dynamo=False,
        )
    model = onnx.load(str(path))
    if fuse_round_clip_cast(model) != 1:
        raise RuntimeError("the exported graph no longer ends in Round -> Clip -> Cast; update fuse_round_clip_cast")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path

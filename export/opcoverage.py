"""Will TensorRT's ONNX parser take this graph? A static check that needs no TensorRT install.

The operator list is the "Supported: Y" rows of the onnx-tensorrt parser's operator support matrix
(docs/operators.md, TensorRT 8.5+; TensorRT 10 supports a superset). The per-op restrictions that
matter for our graphs are checked too. Passing is necessary, not sufficient: the real proof is
``facecloak-export build`` on a GPU host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSwish HardSigmoid
Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression
NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign
Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
MAX_OPSET = 20  # TensorRT 10 parses opsets 9..20
_RESIZE_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


@dataclass
class Coverage:
    ops: dict[str, int]  # op type -> count
    unsupported: list[str] = field(default_factory=list)  # op types missing from the parser
    restrictions: list[str] = field(default_factory=list)  # supported ops used in an unsupported way

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.restrictions

    def summary(self) -> str:
        if self.ok:
            return f"TensorRT ONNX parser coverage OK ({len(self.ops)} op types, {sum(self.ops.values())} nodes)"
        return "; ".join([f"unsupported ops: {', '.join(self.unsupported)}"] * bool(self.unsupported) + self.restrictions)


def _restriction(node: onnx.NodeProto) -> str | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        return f"MaxPool {node.name or node.output[0]} uses the Indices output, which TensorRT does not support"
    if node.op_type == "Resize":
        mode = attrs.get("coordinate_transformation_mode", b"half_pixel")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in _RESIZE_MODES:
            return f"Resize {node.name} uses coordinate_transformation_mode={mode}"
    return None


def check_tensorrt_coverage(model: onnx.ModelProto) -> Coverage:
    """Op types and restrictions of ``model`` (subgraphs included) against TensorRT's ONNX parser."""
    ops: dict[str, int] = {}
    restrictions: list[str] = []

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            ops[key] = ops.get(key, 0) + 1
            if (problem := _restriction(node)) is not None:
                restrictions.append(problem)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(model.graph)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > MAX_OPSET:
            restrictions.append(f"opset {opset.version} is above TensorRT's {MAX_OPSET}")
    for value in list(model.graph.input) + list(model.graph.output):
        if value.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE:
            restrictions.append(f"{value.name} is float64 (TensorRT would cast it down)")
    unsupported = sorted(op for op in ops if op not in TENSORRT_ONNX_OPS)
    return Coverage(ops=dict(sorted(ops.items())), unsupported=unsupported, restrictions=restrictions)

"""Surrogate recognisers as self-contained ONNX graphs with a dynamic batch dimension.

Each graph takes what every facecloak embedder takes, aligned RGB faces in [0, 1] at the frame size
(``faces``: batch x 3 x S x S), and returns unit-norm embeddings (``embedding``: batch x D). The
model card's preprocessing (resize to the model's input size, channel order, value range, mean/std)
and the final L2 normalisation are spliced around the original graph as standard ONNX nodes, so ONNX
Runtime, TensorRT and Triton all run exactly what ``facecloak.models.torch_embedder`` computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from facecloak.assets import asset
from facecloak.models import get_card
from facecloak.models.registry import ModelCard
from facecloak.models.surrogate import runtime_model

INPUT_NAME = "faces"
OUTPUT_NAME = "embedding"
_NORM_EPS = 1e-12  # as torch.nn.functional.normalize
_RESIZE_OPSET = 15


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _preprocess(card: ModelCard, size: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from ``faces`` to the original graph input: resize, channel order, value range (and mean/std)."""
    nodes, consts, current = [], [], INPUT_NAME
    if size != card.input_size:
        consts.append(_const("pre_hw", np.array([card.input_size] * 2, np.int64)))
        nodes += [
            helper.make_node("Shape", [current], ["pre_shape"], end=2),
            helper.make_node("Concat", ["pre_shape", "pre_hw"], ["pre_sizes"], axis=0),
            # half_pixel + linear = torch bilinear with align_corners=False (no antialias: it only upsamples
            # or mildly resizes aligned faces).
            helper.make_node("Resize", [current, "", "", "pre_sizes"], ["pre_resized"], mode="linear",
                             coordinate_transformation_mode="half_pixel"),
        ]
        current = "pre_resized"
    if card.channel_order == "BGR":
        consts.append(_const("pre_bgr", np.array([2, 1, 0], np.int64)))
        nodes.append(helper.make_node("Gather", [current, "pre_bgr"], ["pre_flipped"], axis=1))
        current = "pre_flipped"
    scale, offset = card.input_affine()  # 0-d, or (3, 1, 1) per channel: broadcasts over (B, 3, S, S) either way
    consts += [_const("pre_scale", scale.astype(np.float32)), _const("pre_offset", offset.astype(np.float32))]
    nodes += [helper.make_node("Mul", [current, "pre_scale"], ["pre_scaled"]),
              helper.make_node("Add", ["pre_scaled", "pre_offset"], [card.input_name])]
    return nodes, consts


def _normalise(raw: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    consts = [_const("post_eps", np.array(_NORM_EPS, np.float32))]
    nodes = [
        helper.make_node("ReduceL2", [raw], ["post_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["post_norm", "post_eps"], ["post_safe"]),
        helper.make_node("Div", [raw, "post_safe"], [OUTPUT_NAME]),
    ]
    return nodes, consts


def surrogate_graph(name: str, size: int = 112) -> onnx.ModelProto:
    """The registered model ``name`` wrapped to take [0, 1] RGB faces at ``size`` px, any batch."""
    card = get_card(name)
    model = runtime_model(card)
    if any(op.domain not in ("", "ai.onnx") or op.version > 17 for op in model.opset_import):
        raise NotImplementedError(f"{card.file}: only default-domain opsets <= 17 are supported (ReduceL2 axes attribute)")
    if size != card.input_size and model.opset_import[0].version < _RESIZE_OPSET:
        # The resize in front (Shape's `end`, Resize's `sizes`) needs opset 15; older files are converted.
        model = version_converter.convert_version(model, _RESIZE_OPSET)
        model.ir_version = max(model.ir_version, 8)  # opset 15 needs IR >= 8
    graph = model.graph
    raw = "raw_" + card.output_name  # the model's own output may already be called "embedding"
    for node in graph.node:
        for names in (node.input, node.output):
            names[:] = [raw if n == card.output_name else n for n in names]
    pre_nodes, pre_consts = _preprocess(card, size)
    post_nodes, post_consts = _normalise(raw)
    used = {i for node in graph.node for i in node.input}
    initialisers = [init for init in graph.initializer if init.name in used]  # drop dead weights (SFace has some)
    body_inputs = [i for i in graph.input if i.name != card.input_name and i.name not in {t.name for t in graph.initializer}]
    new_graph = helper.make_graph(
        pre_nodes + list(graph.node) + post_nodes,
        f"facecloak_{name}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size]), *body_inputs],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", card.embedding_dim])],
        initializer=initialisers + pre_consts + post_consts,
    )
    wrapped = helper.make_model(new_graph, opset_imports=list(model.opset_import), ir_version=min(model.ir_version, 10),
                                producer_name="facecloak-export")
    onnx.checker.check_model(wrapped, full_check=True)
    return wrapped


def export_surrogate(name: str, path: Path, size: int = 112) -> onnx.ModelProto:
    """Write the wrapped graph of ``name`` to ``path``; returns it."""
    model = surrogate_graph(name, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return model

"""Backward-op rules, the TensorRT op-coverage check, the TensorRT path failing clearly, Triton emission."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch.fx.experimental.proxy_tensor import make_fx

from facecloak.engines.manifest import Artefact, EngineMismatchError, Manifest, sha256_file
from facecloak.engines.runtimes import EngineUnavailableError, RuntimeConfig, open_runtime
from facecloak.export.tensorrt_build import BuildConfig, build_engines, profile_shapes
from facecloak.export.cli import main
from facecloak.export.decompositions import export_decompositions
from facecloak.export.opcoverage import check_tensorrt_coverage
from facecloak.export.step_graph import resample_matrix
from facecloak.export.triton import TritonConfig, emit_repository
from facecloak.optimise.torch_step import diversify


def _traced_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, set[str], torch.Tensor]:  # noqa: ANN001
    """Input gradient of sum(fn(x) * w) traced through our decompositions, and the ops left in the graph."""
    weight = torch.randn_like(fn(x))

    def grad(inp: torch.Tensor) -> torch.Tensor:
        inp = inp.detach().requires_grad_(True)
        return torch.autograd.grad((fn(inp) * weight).sum(), inp)[0]

    graph = make_fx(grad, decomposition_table=export_decompositions())(x)
    ops = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    return graph(x), ops, grad(x)


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 1, 1), (2, 0, 4), (1, 1, 8)])
def test_conv_backward_becomes_transposed_conv(stride: int, padding: int, groups: int) -> None:
    weight = torch.randn(8, 8 // groups, 3, 3)
    got, ops, want = _traced_grad(lambda x: F.conv2d(x, weight, None, stride, padding, 1, groups), torch.randn(2, 8, 11, 11))
    assert not any("backward" in op for op in ops)
    assert torch.allclose(got, want, atol=1e-5)


def test_grid_sample_and_resize_backward_are_matrix_products() -> None:
    theta = torch.tensor([[[1 / 1.06, 0, 0.05], [0, 1 / 1.06, -0.03]], [[1 / 0.95, 0, -0.02], [0, 1 / 0.95, 0.04]]])
    for fn in (lambda x: diversify(x, theta, x.shape[-1]),  # warp with border padding
               lambda x: F.interpolate(x, size=(30, 30), mode="bilinear", align_corners=False)):  # FaceNet's 112 -> 160
        got, ops, want = _traced_grad(fn, torch.rand(2, 3, 21, 21))
        assert not any("backward" in op for op in ops), ops
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("down", [112, 100, 71])
def test_resample_matrix_reproduces_diversify_down_up_sampling(down: int) -> None:
    x = torch.rand(2, 3, 112, 112)
    identity = torch.eye(2, 3).repeat(2, 1, 1)
    matrix = resample_matrix(112, down)
    assert torch.allclose(matrix @ x @ matrix.T, diversify(x, identity, down), atol=2e-5)


def _model(nodes: list[onnx.NodeProto], outputs: list[str], opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def test_tensorrt_op_coverage_check() -> None:
    ok = check_tensorrt_coverage(_model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("ConvTranspose", ["y", "y"], ["z"])], ["z"]))
    assert ok.ok and ok.ops == {"ConvTranspose": 1, "Relu": 1}
    pooled = check_tensorrt_coverage(_model([helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])], ["y"]))
    assert not pooled.ok and "Indices" in pooled.summary()
    odd = check_tensorrt_coverage(_model([helper.make_node("Unique", ["x"], ["y"]), helper.make_node("Mish", ["y"], ["z"])], ["z"], 21))
    assert odd.unsupported == ["Mish", "Unique"] and "opset 21" in odd.summary()


def _fake_build(tmp_path) -> Manifest:  # noqa: ANN001
    """A build folder with a tiny batched 'surrogate' and an unbatched 'step' graph (scalar output)."""
    emb = _model([helper.make_node("ReduceMean", ["x"], ["embedding"], axes=[2, 3], keepdims=0)], ["embedding"])
    step_graph = helper.make_graph([helper.make_node("ReduceSum", ["delta"], ["loss"], keepdims=0)], "s",
                                   [helper.make_tensor_value_info("delta", TensorProto.FLOAT, [3, 8, 8])],
                                   [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
    manifest = Manifest()
    for name, kind, model, inputs, outputs in (
        ("surrogate_tiny", "surrogate", emb, {"x": ["batch", 3, 8, 8]}, {"embedding": ["batch", 3]}),
        ("pgd_step_tiny", "step", helper.make_model(step_graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
         {"delta": [3, 8, 8]}, {"loss": []}),
    ):
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        manifest.add(Artefact(name, kind, f"{name}.onnx", sha256_file(tmp_path / f"{name}.onnx"), inputs=inputs, outputs=outputs))
    manifest.save(tmp_path)
    return manifest


def test_triton_repository(tmp_path) -> None:  # noqa: ANN001
    _fake_build(tmp_path)
    dirs = emit_repository(TritonConfig(tmp_path, tmp_path / "repo", max_batch=32))
    assert sorted(d.name for d in dirs) == ["pgd_step_tiny", "surrogate_tiny"]
    surrogate = (tmp_path / "repo/surrogate_tiny/config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in surrogate and "max_batch_size: 32" in surrogate
    assert "dynamic_batching" in surrogate and "dims: [ 3, 8, 8 ]" in surrogate  # batch dim left to Triton
    step = (tmp_path / "repo/pgd_step_tiny/config.pbtxt").read_text()
    assert "max_batch_size: 0" in step and "dynamic_batching" not in step and "reshape: { shape: [ ] }" in step
    assert sha256_file(tmp_path / "repo/surrogate_tiny/1/model.onnx") == sha256_file(tmp_path / "surrogate_tiny.onnx")
    with pytest.raises(EngineMismatchError, match="no manifest.json"):  # no engines were built here
        emit_repository(TritonConfig(tmp_path, tmp_path / "repo2", backend="tensorrt"))


def test_tensorrt_profiles_cover_the_batch_dimension(tmp_path) -> None:  # noqa: ANN001
    manifest = _fake_build(tmp_path)
    cfg = BuildConfig(tmp_path, min_batch=1, opt_batch=8, max_batch=32)
    assert profile_shapes(manifest.artefacts["surrogate_tiny"], cfg) == {"x": ((1, 3, 8, 8), (8, 3, 8, 8), (32, 3, 8, 8))}
    assert profile_shapes(manifest.artefacts["pgd_step_tiny"], cfg) == {"delta": ((3, 8, 8),) * 3}


def test_tensorrt_path_fails_clearly_without_writing_engines(tmp_path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails here, also on a GPU host that has it
    _fake_build(tmp_path)
    with pytest.raises(EngineUnavailableError, match="TensorRT is not installed"):
        build_engines(BuildConfig(tmp_path))
    assert main(["build", "--out", str(tmp_path)]) == EngineUnavailableError.exit_code != 0
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.plan"))
    with pytest.raises(EngineUnavailableError, match="TensorRT is not installed"):
        open_runtime(RuntimeConfig("tensorrt", tmp_path))


@pytest.mark.parametrize("side", [13, 14])
@pytest.mark.parametrize("kernel,stride,padding,ceil", [(3, 2, 0, False), (3, 1, 1, False), (2, 2, 0, True), (3, 2, 1, True)])
def test_max_pool_needs_no_indices(kernel: int, stride: int, padding: int, ceil: bool, side: int) -> None:
    x = torch.randn(2, 5, side, side)
    x[0, 0, :4, :4] = 0.5  # ties: the gradient must go to the first maximum only, as in aten
    got, ops, want = _traced_grad(lambda t: F.max_pool2d(t, kernel, stride, padding, 1, ceil), x)
    assert not any("backward" in op or "max_pool" in op for op in ops), ops
    assert torch.allclose(got, want, atol=1e-6)


def test_traced_backward_exports_to_onnx_runtime(tmp_path) -> None:  # noqa: ANN001
    """conv -> relu -> max pool -> bilinear resize, input gradient traced, exported, run by ORT."""
    import onnxruntime as ort

    weight = torch.randn(4, 3, 3, 3)

    def fn(t: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(F.relu(F.conv2d(t, weight, None, 1, 1)), 3, 2)
        return F.interpolate(pooled, size=(9, 9), mode="bilinear", align_corners=False)

    x = torch.randn(2, 3, 15, 15)
    weights = torch.randn_like(fn(x))

    def grad(inp: torch.Tensor) -> torch.Tensor:
        inp = inp.detach().requires_grad_(True)
        return torch.autograd.grad((fn(inp) * weights).sum(), inp)[0]

    graph = make_fx(grad, decomposition_table=export_decompositions())(x)
    torch.onnx.export(graph.eval(), (x,), dynamo=True, opset_version=18, input_names=["x"], verbose=False).save(str(tmp_path / "g.onnx"))
    model = onnx.load(str(tmp_path / "g.onnx"))
    assert check_tensorrt_coverage(model).ok, check_tensorrt_coverage(model).summary()
    got = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert np.allclose(got, grad(x).numpy(), atol=1e-5)

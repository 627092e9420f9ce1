import platform
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from facecloak.errors import BadOptionError
from facecloak.faces import AlignedFrame, align_largest_face, to_chw_float
from facecloak.imageio import read_image
from facecloak.models import REGISTRY, ModelCard, OrtEmbedder, get_card, ort_embedder, torch_embedder
from facecloak.models.onnx_torch import OnnxGraphModule

from .conftest import PEOPLE, person_photos

MODELS = ("sface", "facenet", "ms1m", "faceplugin", "sirius")
# Each card's normalisation as its source documents it (shared/assets/README.md), written out independently
# of ModelCard.input_affine: RGB faces in [0, 1] (B, 3, S, S) -> the tensor the graph expects.
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
DOCUMENTED_INPUT = {
    "sface": lambda f: f * 255,
    "ms1m": lambda f: (f - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None],
    "faceplugin": lambda f: (f[:, ::-1] * 255 - 127) / 128,
    "sirius": lambda f: (f * 255 - 127.5) / 128,
}


@pytest.fixture(scope="module")
def aligned_faces(lfw, detector):
    paths = [person_photos(lfw, p)[i] for p in PEOPLE for i in (0, 1)]
    crops = [align_largest_face(detector, read_image(p), AlignedFrame()).crop for p in paths]
    return to_chw_float(np.stack(crops))


@pytest.mark.parametrize("name", MODELS)
def test_torch_path_matches_onnx_runtime(name, aligned_faces):
    ref = ort_embedder(name)(aligned_faces)
    with torch.no_grad():
        out = torch_embedder(name)(torch.from_numpy(aligned_faces)).numpy()
    assert out.shape == (len(aligned_faces), get_card(name).embedding_dim)
    assert np.abs(out - ref).max() < 1e-4  # unit vectors: measured <= 6e-7 for every model
    assert (out * ref).sum(axis=1).min() > 0.9999


@pytest.mark.parametrize("name", DOCUMENTED_INPUT)
def test_card_feeds_the_graph_its_documented_input(name, aligned_faces):
    """The card's preprocessing (channel order, value range, mean/std) is the documented one, on the raw graph."""
    card, embed = get_card(name), ort_embedder(name)
    x = np.ascontiguousarray(DOCUMENTED_INPUT[name](aligned_faces.astype(np.float64)), np.float32)
    (raw,) = embed.session.run([card.output_name], {card.input_name: x})
    ref = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert np.abs(embed(aligned_faces) - ref).max() < 1e-5  # folding mean/std into one scale only rounds


def test_embedding_with_an_intermediate_activation(aligned_faces):
    embed = torch_embedder("sface")
    x = torch.from_numpy(aligned_faces[:2])
    with torch.no_grad():
        emb, act = embed.with_activation(x, "conv_8_relu")
        assert torch.allclose(emb, embed(x))  # the same forward pass as the embedding
    assert act.ndim == 4 and act.shape[0] == 2 and act.abs().sum() > 0
    with pytest.raises(KeyError, match="no value named"):
        embed.with_activation(x, "conv_8_dw_conv2d")  # folded into its batch norm's output


@pytest.mark.parametrize("name", MODELS)
def test_input_gradients_are_finite_and_nonzero(name, aligned_faces):
    x = torch.from_numpy(aligned_faces[:2]).requires_grad_(True)
    emb = torch_embedder(name)(x)
    (grad,) = torch.autograd.grad((emb[0] @ emb[1]), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_same_person_matches_and_strangers_do_not(name, aligned_faces):
    emb = ort_embedder(name)(aligned_faces)
    thr = get_card(name).match_threshold
    same = [emb[i] @ emb[i + 1] for i in range(0, len(emb), 2)]
    strangers = [emb[i] @ emb[j] for i in range(0, len(emb), 2) for j in range(i + 2, len(emb), 2)]
    assert np.mean(np.array(same) >= thr) >= 0.8
    assert np.mean(np.array(strangers) < thr) >= 0.9


def test_faceplugin_wants_bgr(lfw, detector):
    """BGR separates people clearly better than RGB (README: d' 6.5 vs 5.6 on the first 20 LFW people)."""
    people = sorted(p.name for p in lfw.iterdir() if p.is_dir())[:20]
    crops = [align_largest_face(detector, read_image(person_photos(lfw, p)[i]), AlignedFrame()).crop
             for p in people for i in (0, 1)]
    faces = to_chw_float(np.stack(crops))
    card = get_card("faceplugin")

    def d_prime(order: str) -> float:
        emb = OrtEmbedder(replace(card, channel_order=order))(faces)
        sims, same = emb @ emb.T, np.equal.outer(np.arange(len(emb)) // 2, np.arange(len(emb)) // 2)
        genuine, impostor = sims[np.triu(same, 1)], sims[np.triu(~same, 1)]
        return (genuine.mean() - impostor.mean()) / np.sqrt((genuine.var() + impostor.var()) / 2)

    assert card.channel_order == "BGR"
    assert d_prime("BGR") > d_prime("RGB") + 0.5


def test_registry_cards_and_unknown_names():
    assert set(MODELS) <= REGISTRY.keys()
    with pytest.raises(BadOptionError, match="unknown face-recognition model"):
        get_card("arcface_r999")
    # Evaluation only: sirius's upstream has no licence, so later code can refuse to ship it.
    assert [n for n in MODELS if not get_card(n).shippable] == ["sirius"]


def test_mean_std_card_fields():
    plain = get_card("sface").input_affine()
    assert [v.shape for v in plain] == [(), ()] and [float(v) for v in plain] == [255.0, 0.0]  # no per-channel step
    scale, offset = get_card("ms1m").input_affine()
    assert scale.shape == offset.shape == (3, 1, 1)
    assert np.allclose(0.5 * scale.ravel() + offset.ravel(), (0.5 - IMAGENET_MEAN) / IMAGENET_STD)
    base = dict(name="x", file="x.onnx", input_size=112, input_name="i", output_name="o", embedding_dim=8)
    with pytest.raises(ValueError, match="mean and std go together"):
        ModelCard(**base, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std > 0"):
        ModelCard(**base, mean=(0.5, 0.5, 0.5), std=(1.0, 0.0, 1.0))


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], None])
def test_interpreter_abs_and_transpose_match_onnx_runtime(perm):
    """Ops the MobileFaceNets use (sirius: Abs in its PReLU, Transpose before the output), incl. default perm."""
    nodes = [helper.make_node("Abs", ["x"], ["a"]),
             helper.make_node("Transpose", ["a"], ["y"], **({"perm": perm} if perm else {}))]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = OnnxGraphModule(model)(torch.from_numpy(x)).numpy()
    (ref,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert out.shape == ref.shape and np.array_equal(out, ref)


@pytest.mark.parametrize("slope_shape", [(4, 1, 1), (1,)])
def test_interpreter_prelu_matches_onnx_runtime_with_and_without_gradient(slope_shape):
    """PReLU runs on aten's kernel when no gradient is needed and as x * factor when one is: both give
    ONNX Runtime's values, and the input gradient is the PReLU derivative (slopes < 0, in (0, 1), > 1)."""
    rng = np.random.default_rng(0)
    slope = np.array([-0.5, 0.0, 0.25, 1.5][: int(np.prod(slope_shape))], np.float32).reshape(slope_shape)
    graph = helper.make_graph([helper.make_node("PRelu", ["x", "slope"], ["y"])], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(slope, "slope")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    x[0, 0, 0, :2] = 0.0  # the kink: ONNX and the derivative below take x >= 0 as the positive side
    (ref,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    net = OnnxGraphModule(model)
    with torch.no_grad():
        assert np.array_equal(net(torch.from_numpy(x)).numpy(), ref)
    inp = torch.from_numpy(x).requires_grad_(True)
    out = net(inp)
    upstream = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    (grad,) = torch.autograd.grad(out, inp, upstream)
    assert np.array_equal(out.detach().numpy(), ref)
    assert np.array_equal(grad.numpy(), np.where(x >= 0, 1.0, slope).astype(np.float32) * upstream.numpy())


FLUSH_PROBE = """
import torch
from facecloak.models.weights import flush_subnormals
supported = flush_subnormals()
torch.set_num_threads(2)
x = torch.full((1 << 22,), 1e-39)  # subnormal float32; the multiply below is split across both threads
print(supported, int((x * 1.0).count_nonzero()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="flush-to-zero and denormals-are-zero are x86 modes")
def test_flush_subnormals_reaches_the_worker_threads_started_after_it():
    """Called first in a process, every thread PyTorch starts later inherits the mode: no subnormal survives."""
    done = subprocess.run([sys.executable, "-c", FLUSH_PROBE], capture_output=True, text=True, timeout=120, check=True)
    supported, nonzero = done.stdout.split()
    assert supported == "True" and nonzero == "0"


def test_dead_weights_are_zeroed_without_changing_the_function(aligned_faces):
    """Faceplugin's near-zero weights (the subnormal slow path on x86) are zeroed in the torch embedder and in
    the model ONNX runtimes receive, and ONNX Runtime embeds real faces the same with and without them."""
    from facecloak.assets import asset
    from facecloak.models.surrogate import runtime_model
    from facecloak.models.weights import DEAD_WEIGHT

    def dead(arrays) -> int:
        floats = (np.asarray(a) for a in arrays)
        return sum(int(((a != 0) & (np.abs(a) < DEAD_WEIGHT)).sum()) for a in floats if np.issubdtype(a.dtype, np.floating))

    card = get_card("faceplugin")
    original, prepared = onnx.load(str(asset(card.file))), runtime_model(card)
    assert dead(onnx.numpy_helper.to_array(i) for i in original.graph.initializer) > 100_000  # the file's dead channels
    assert dead(onnx.numpy_helper.to_array(i) for i in prepared.graph.initializer) == 0
    net = torch_embedder("faceplugin").net
    assert dead(getattr(net, buffer) for buffer in net._names.values()) == 0
    x = np.ascontiguousarray(DOCUMENTED_INPUT["faceplugin"](aligned_faces.astype(np.float64)), np.float32)

    def run(model):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {card.input_name: x})[0]

    np.testing.assert_allclose(run(prepared), run(original), rtol=0, atol=1e-6)

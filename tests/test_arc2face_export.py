"""ONNX export of the tiny Arc2Face graphs: dynamic batch, splice inside the graph, parity with PyTorch."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from facecloak.assets import asset
from facecloak.views.arc2face import Arc2FaceConfig, Arc2FaceViews
from facecloak.export.arc2face import ExportSpec, export_arc2face, graph_inputs, graph_modules
from facecloak.views.arc2face_layout import verify_layout
from facecloak.views.arc2face_sampler import SamplerConfig, load_models
from .arc2face_tiny import build_tiny_model_dir

SPEC = ExportSpec(size=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("a2f"), asset("models/facenet_casia_160.onnx"))


@pytest.fixture(scope="module")
def models(tiny):
    return load_models(verify_layout(tiny), SamplerConfig(device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    return {g.name: g for g in export_arc2face(models, tmp_path_factory.mktemp("onnx"), SPEC)}


def test_three_graphs_with_a_dynamic_batch(exported):
    assert set(exported) == {"arc2face_text", "arc2face_unet", "arc2face_vae_decoder"}
    text, unet, vae = exported["arc2face_text"], exported["arc2face_unet"], exported["arc2face_vae_decoder"]
    assert text.inputs == {"input_ids": ["batch", 16], "id_embedding": ["batch", 512]}
    assert text.outputs == {"prompt_embeds": ["batch", 16, 576]}
    assert unet.inputs == {"sample": ["batch", 4, 16, 16], "timestep": ["batch"], "encoder_hidden_states": ["batch", 16, 576]}
    assert vae.outputs == {"image": ["batch", 3, 32, 32]}
    assert all(len(g.sha256) == 64 and g.path.is_file() for g in exported.values())


def test_parity_at_another_batch(exported):
    for graph in exported.values():
        assert graph.parity["batch"] == SPEC.parity_batch != SPEC.example_batch
        assert graph.parity["rel_err"] < SPEC.tolerance, graph.name


def test_text_graph_carries_the_identity_splice(models, exported):
    session = ort.InferenceSession(str(exported["arc2face_text"].path), providers=["CPUExecutionProvider"])
    inputs = graph_inputs(models, SPEC, 2, seed=4)["arc2face_text"]
    (onnx_out,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    assert not np.allclose(onnx_out[0], onnx_out[1], atol=1e-3)  # two identities, two conditionings
    with torch.no_grad():
        ref = graph_modules(models)["arc2face_text"](**inputs).numpy()
    assert np.abs(onnx_out - ref).max() < 1e-4


def test_export_cli_has_an_arc2face_subcommand(tmp_path):
    from facecloak.export.cli import build_parser

    args = build_parser().parse_args(["arc2face", str(tmp_path), "--out", str(tmp_path / "o"), "--size", "64"])
    assert (args.size, args.no_verify, args.func.__name__) == (64, False, "cmd_arc2face")


@pytest.fixture(scope="module")
def recorded(tiny, exported):
    """The export folder with its manifest.json, as `facecloak-export arc2face` leaves it."""
    from facecloak.export.pipeline import save_artefacts
    from facecloak.export.arc2face import to_artefacts

    out = exported["arc2face_unet"].path.parent
    save_artefacts(out, to_artefacts(list(exported.values()), out, tiny, SPEC))
    return out


def test_graphs_are_recorded_in_the_export_manifest(recorded, exported):
    from facecloak.engines.manifest import load_manifest

    manifest = load_manifest(recorded)
    unet = manifest.artefacts["arc2face_unet"]
    assert unet.kind == "arc2face" and unet.file == "arc2face_unet.onnx" and unet.sha256 == exported["arc2face_unet"].sha256
    assert set(unet.attributes["weights"]) == {"unet/config.json", "unet/diffusion_pytorch_model.safetensors"}
    assert unet.inputs["sample"][0] == "batch" and unet.verification["rel_err"] < SPEC.tolerance
    assert set(manifest.artefacts["arc2face_text"].attributes["weights"]) >= {"text_encoder/model.safetensors", "tokenizer/vocab.json"}


def test_exported_graphs_replay_the_sampling_loop(tiny, models, recorded):
    """The seeded DPM-Solver loop on the ONNX graphs gives the PyTorch sampler's images."""
    from facecloak.engines.arc2face_runtime import OnnxArc2FaceSampler
    from facecloak.views.arc2face_sampler import Arc2FaceSampler

    cfg = SamplerConfig(size=32, steps=2, batch_size=3, device="cpu")
    identity = np.random.default_rng(2).normal(size=512).astype(np.float32)
    onnx_images = OnnxArc2FaceSampler(recorded, tiny, cfg).sample(identity, [4, 5, 6])
    torch_images = Arc2FaceSampler(models, cfg).sample(identity, [4, 5, 6])
    assert onnx_images.shape == (3, 32, 32, 3)
    assert np.abs(onnx_images.astype(int) - torch_images).max() <= 1
    views = Arc2FaceViews(Arc2FaceConfig(tiny, sampler=cfg), sampler=OnnxArc2FaceSampler(recorded, tiny, cfg), identity=object())
    assert isinstance(views.sampler, OnnxArc2FaceSampler)


def test_runtime_refuses_stale_or_mismatched_graphs(tiny, recorded, tmp_path):
    import shutil

    from facecloak.engines.manifest import EngineMismatchError, load_manifest
    from facecloak.errors import BadOptionError
    from facecloak.engines.arc2face_runtime import OnnxArc2FaceSampler

    with pytest.raises(BadOptionError, match="works at 32 px; asked for 64 px"):
        OnnxArc2FaceSampler(recorded, tiny, SamplerConfig(size=64, device="cpu"))
    stale = shutil.copytree(recorded, tmp_path / "stale")
    manifest = load_manifest(stale)
    manifest.artefacts["arc2face_unet"].attributes["weights"]["unet/config.json"] = "0" * 64
    manifest.save(stale)
    with pytest.raises(EngineMismatchError, match=r"arc2face_unet was exported from other weights \(unet/config.json"):
        OnnxArc2FaceSampler(stale, tiny, SamplerConfig(size=32, device="cpu"))
    del manifest.artefacts["arc2face_text"]
    manifest.save(stale)
    with pytest.raises(EngineMismatchError, match="has no arc2face_text graph"):
        OnnxArc2FaceSampler(stale, tiny, SamplerConfig(size=32, device="cpu"))

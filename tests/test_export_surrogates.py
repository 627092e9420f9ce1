"""Surrogates exported to ONNX (dynamic batch) and the embedders of each available runtime on real LFW faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from facecloak.engines.manifest import EngineMismatchError, load_manifest
from facecloak.engines.runtimes import EngineUnavailableError, RuntimeConfig, open_runtime
from facecloak.optimise.torch_backend import TorchBackend
from facecloak.errors import BadOptionError
from facecloak.export.pipeline import ExportConfig, export_surrogates
from facecloak.export.surrogates import export_surrogate
from facecloak.export.verify import EMBED_TOLERANCE, real_faces, verify_surrogate

MODELS = ("sface", "facenet")


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("surrogates")
    export_surrogates(ExportConfig(out=out, models=MODELS), log=lambda _: None)
    return out


def test_surrogates_are_verified_with_dynamic_batch(build: Path) -> None:
    manifest = load_manifest(build)
    for name in MODELS:
        artefact = manifest.artefacts[f"surrogate_{name}"]
        assert artefact.kind == "surrogate" and list(artefact.models) == [name]
        assert artefact.verification["max_abs_error"] <= EMBED_TOLERANCE
        assert artefact.verification["tensorrt_ok"], artefact.verification["tensorrt_coverage"]
        assert artefact.inputs == {"faces": ["batch", 3, 112, 112]}
        model = onnx.load(str(build / artefact.file))
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert manifest.versions["onnxruntime"] and manifest.versions["tensorrt"] is None


@pytest.mark.parametrize("model", MODELS)
def test_runtimes_agree_on_real_faces(build: Path, model: str) -> None:
    faces = real_faces(3)
    batch = np.concatenate([faces.user, faces.views, faces.others])  # 1 + 3 of Tony Blair, 2 others
    ort_emb = open_runtime(RuntimeConfig("ort-cpu", build)).embedder(model)(batch)
    torch_emb = TorchBackend().embed(model, batch)  # the core's reference embedder
    assert np.abs(ort_emb - torch_emb).max() <= EMBED_TOLERANCE
    assert np.allclose(np.linalg.norm(ort_emb, axis=1), 1, atol=1e-5)
    sims = ort_emb[1:] @ ort_emb[0]
    assert sims[:3].min() > sims[3:].max()  # the same person's views beat two other people
    single = open_runtime(RuntimeConfig("ort-cpu", build)).embedder(model)(batch[:1])
    assert np.abs(single - ort_emb[:1]).max() <= EMBED_TOLERANCE  # batch size is free


@pytest.mark.parametrize(("model", "size"), [("ms1m", 112), ("faceplugin", 160)])
def test_per_channel_normalisation_is_exported(tmp_path: Path, model: str, size: int) -> None:
    """Cards with mean/std (ms1m: ImageNet, per channel; faceplugin: BGR, opset 9 converted for the resize)."""
    path = tmp_path / f"surrogate_{model}.onnx"
    export_surrogate(model, path, size)
    assert verify_surrogate(model, path, size)["max_abs_error"] <= EMBED_TOLERANCE  # ORT vs torch_embedder


def test_tampered_graph_is_refused(build: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(build, copy)
    with open(copy / "surrogate_sface.onnx", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\0" * 8)
    with pytest.raises(EngineMismatchError, match="does not match its manifest hash"):
        open_runtime(RuntimeConfig("ort-cpu", copy)).embedder("sface")


def test_missing_things_fail_clearly(build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineMismatchError, match="no manifest.json"):
        open_runtime(RuntimeConfig("ort-cpu", tmp_path))
    with pytest.raises(EngineMismatchError, match="no surrogate graph for model 'arcface'"):
        open_runtime(RuntimeConfig("ort-cpu", build)).embedder("arcface")
    import onnxruntime

    # As with the CPU build of ONNX Runtime (a GPU host with onnxruntime-gpu has the CUDA provider).
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(EngineUnavailableError, match="onnxruntime-gpu"):
        open_runtime(RuntimeConfig("ort-cuda", build))
    with pytest.raises(BadOptionError, match="unknown runtime"):
        RuntimeConfig("tvm")

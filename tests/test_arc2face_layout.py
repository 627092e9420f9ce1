"""Model directory layout, manifest checksums, and the backend decision (Describe's reason string)."""

import json
import sys
import shutil

import pytest

from facecloak.assets import asset
from facecloak.errors import AssetMissingError
from facecloak.views import AugmentViews
from facecloak.views.arc2face_layout import ChecksumError, main, verify_layout, write_manifest
from facecloak.assemble import EnrollerSpec, build_views
from facecloak.views.arc2face_select import ENV_MODEL_DIR, choose_view_backend
from .arc2face_tiny import build_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("a2f"), asset("models/facenet_casia_160.onnx"))


@pytest.fixture
def copy(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "m", symlinks=True)


def test_manifest_lists_every_file_with_its_sha256(tiny):
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert manifest["format"] == "facecloak-arc2face/1"
    assert {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "face_id/arcface.onnx",
            "vae/config.json", "tokenizer/vocab.json", "scheduler/scheduler_config.json"} <= set(manifest["files"])
    assert all(len(h) == 64 for h in manifest["files"].values())
    assert verify_layout(tiny).id_model == tiny / "face_id" / "arcface.onnx"


def test_corrupted_file_is_refused(copy):
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    verify_layout(copy, check_hashes=False)  # the cheap structural check cannot see it
    with pytest.raises(ChecksumError, match="unet/diffusion_pytorch_model.safetensors does not match"):
        verify_layout(copy)


def test_missing_part_is_named(copy):
    shutil.rmtree(copy / "vae")
    with pytest.raises(AssetMissingError, match=r"missing: vae/config.json, vae/diffusion_pytorch_model"):
        verify_layout(copy)


def test_file_outside_the_manifest_is_refused_until_rewritten(copy, capsys):
    (copy / "unet" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ChecksumError, match="unet/extra.bin"):
        verify_layout(copy)
    assert main(["manifest", str(copy)]) == 0
    assert main(["verify", str(copy)]) == 0
    assert "all files match" in capsys.readouterr().out


def test_bad_manifest_and_absent_directory(copy, tmp_path):
    (copy / "manifest.json").write_text('{"format": "other/9", "files": {}}')
    with pytest.raises(ChecksumError, match="other/9"):
        verify_layout(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(AssetMissingError, match="manifest.json is missing"):
        verify_layout(copy)
    with pytest.raises(AssetMissingError, match="not found"):
        verify_layout(tmp_path / "nowhere")
    with pytest.raises(AssetMissingError, match="incomplete"):
        write_manifest(tmp_path)


def test_backend_is_arc2face_only_with_weights_extra_and_accelerator(tiny, monkeypatch):
    monkeypatch.delenv(ENV_MODEL_DIR, raising=False)
    gpu = lambda: "NVIDIA H100"  # noqa: E731
    choice = choose_view_backend(None, accelerator=gpu)
    assert choice.name == "augment" and ENV_MODEL_DIR in choice.reason
    assert isinstance(build_views(EnrollerSpec())[0], AugmentViews)
    choice = choose_view_backend(tiny, accelerator=lambda: None)
    assert choice.name == "augment" and "no CUDA accelerator" in choice.reason
    choice = choose_view_backend(tiny, accelerator=gpu)
    assert (choice.name, choice.model_dir) == ("arc2face", tiny) and "NVIDIA H100" in choice.reason
    monkeypatch.setenv(ENV_MODEL_DIR, str(tiny))
    assert choose_view_backend(accelerator=gpu).name == "arc2face"
    assert choose_view_backend(accelerator=lambda: None, allow_cpu=True).name == "arc2face"


def test_backend_falls_back_on_broken_weights_or_missing_extra(copy, monkeypatch):
    gpu = lambda: "NVIDIA H100"  # noqa: E731
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    choice = choose_view_backend(copy, accelerator=gpu)
    assert choice.name == "augment" and "'arc2face' extra (diffusers not installed)" in choice.reason
    monkeypatch.setattr(importlib.util, "find_spec", real)
    (copy / "face_id" / "arcface.onnx").unlink()
    choice = choose_view_backend(copy, accelerator=gpu)
    assert choice.name == "augment" and "face_id/arcface.onnx" in choice.reason


def test_core_and_backend_modules_import_without_diffusers():
    """Selecting a backend (and importing the Arc2Face modules) must not pay for diffusers/transformers."""
    import subprocess

    code = ("import sys, facecloak.views, facecloak.views.arc2face, facecloak.views.arc2face_select; "
            "bad = [m for m in ('diffusers', 'transformers', 'insightface') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_upstream_pytorch_bin_text_encoder_loads(copy):
    """Arc2Face ships its encoder as pytorch_model.bin: the layout and loader accept it."""
    import torch
    from safetensors.torch import load_file

    from facecloak.views.arc2face_sampler import SamplerConfig, load_models

    weights = copy / "text_encoder" / "model.safetensors"
    state = load_file(weights)
    torch.save(state, copy / "text_encoder" / "pytorch_model.bin")
    weights.unlink()
    write_manifest(copy)
    models = load_models(verify_layout(copy), SamplerConfig(device="cpu"))
    loaded = models.text_encoder.state_dict()
    assert set(state) == set(loaded) and all(torch.equal(loaded[k], v) for k, v in state.items())

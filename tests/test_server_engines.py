"""The server's optimise stage on exported engines (ONNX Runtime), and its fallback to PyTorch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facecloak.engines.graph_backend import open_graph_backend, runtime_chain
from facecloak.engines.manifest import EngineMismatchError
from facecloak.enroll import EnrollConfig, Enroller
from facecloak.imageio import read_image
from facecloak.mask import decode_mask, encode_mask
from facecloak.optimise import PGDConfig
from facecloak.optimise import Anchors
from facecloak.optimise.torch_backend import TorchBackend

from .conftest import build_sface_engines
from .test_server_helpers import client_for, lfw_bytes, lfw_path, options, running_server

pytestmark = pytest.mark.slow
VIEWS = 2
CONFIG = EnrollConfig(surrogates=("sface",), views=VIEWS, check_views=1, seed=5, pgd=PGDConfig(iterations=3))


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sface_engines(tmp_path_factory.mktemp("engines"), VIEWS)


def test_enrollment_on_onnx_runtime_matches_pytorch_closely(build: Path) -> None:
    backend, refusals = open_graph_backend("ort-cpu", ("sface",), VIEWS, CONFIG.pgd, engine_dir=build)
    assert backend.name == "ort-cpu" and refusals == []
    photo = read_image(lfw_path("Tony_Blair", 1))
    graph = Enroller(backend=backend).enroll(photo, CONFIG)
    # ONNX Runtime computes float32; PyTorch's default takes bfloat16 convolutions on some CPUs: compare float32 with float32.
    torch_result = Enroller(backend=TorchBackend()).enroll(photo, replace(CONFIG, pgd=replace(CONFIG.pgd, bf16_convolutions=False)))
    assert graph.anchors == torch_result.anchors  # same embeddings -> same anchor identities
    # One loop, one random stream: the masks differ only where float rounding flips the sign of a
    # near-zero gradient component. Tolerance: 90 % of values within 1/255, protection within 0.05.
    close = np.abs(graph.mask.delta - torch_result.mask.delta) < 1 / 255
    assert close.mean() > 0.9
    for g, t in zip(graph.self_check, torch_result.self_check):
        assert abs(g.before - t.before) < 1e-3
        assert g.after < g.before - 0.05 and abs(g.after - t.after) < 0.05


def test_no_fallback_means_a_clear_mismatch_for_other_shapes(build: Path) -> None:
    backend, _ = open_graph_backend("ort-cpu", ("sface",), VIEWS, CONFIG.pgd, engine_dir=build)
    views = np.zeros((VIEWS + 1, 3, 112, 112), np.float32)
    unit = np.eye(128, dtype=np.float32)
    anchors = {"sface": Anchors(unit[0], unit[1], unit[2])}
    with pytest.raises(EngineMismatchError, match="facecloak-export step"):
        backend.stepper(anchors, len(views), 112, CONFIG.pgd)
    assert runtime_chain("tensorrt") == ["tensorrt", "ort-cuda", "ort-cpu"] and runtime_chain("ort-cpu") == ["ort-cpu"]


def test_server_serves_on_onnx_runtime_and_equals_local_engine_enrollment(build: Path) -> None:
    with running_server(backend="ort-cpu", engine_dir=str(build)) as server, client_for(server) as client:
        assert client.describe().backend == "ort-cpu"
        reply = client.enroll(lfw_bytes("Tony_Blair", 1), options(CONFIG))
    backend, _ = open_graph_backend("ort-cpu", ("sface",), VIEWS, CONFIG.pgd, engine_dir=build)
    local = Enroller(backend=backend).enroll(read_image(lfw_path("Tony_Blair", 1)), CONFIG)
    assert reply.masks[0] == encode_mask(local.mask)


def test_server_falls_back_to_pytorch_when_no_engine_fits(tmp_path: Path) -> None:
    with running_server(backend="tensorrt", engine_dir=str(tmp_path)) as server, client_for(server) as client:
        info = client.describe()
        assert info.backend == "torch-cpu"
        # Describe says why: every runtime of the chain was refused, with its own reason.
        assert "using torch-cpu" in info.notes[-1] and all(f"{kind}:" in info.notes[-1]
                                                           for kind in ("tensorrt", "ort-cuda", "ort-cpu"))
        reply = client.enroll(lfw_bytes("Hu_Jintao", 1), options(replace(CONFIG, views=1)))
    assert decode_mask(reply.masks[0]).models == ("sface",)

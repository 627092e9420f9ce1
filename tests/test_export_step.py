"""The exported PGD step graph (SFace, 2 views): verification, ORT/torch runtimes vs run_pgd, torch-free loop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from facecloak.engines.manifest import EngineMismatchError, load_manifest
from facecloak.engines.pgd_loop import NumpyDiversity, SurrogateAnchors, run_pgd_graphs, step_key
from facecloak.engines.runtimes import RuntimeConfig, open_first_runtime, open_runtime
from facecloak.export.step_graph import STATE_INPUTS, StepSpec, TorchDiversity
from facecloak.export.verify import GRAD_REL_L2, SIGN_AGREEMENT, real_step_inputs
from facecloak.models import torch_embedder
from facecloak.optimise import PGDConfig, SurrogateTarget, run_pgd

from .conftest import build_sface_engines

VIEWS = 2
SPEC = StepSpec(("sface",), VIEWS)
PGD = PGDConfig(iterations=3)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sface_engines(tmp_path_factory.mktemp("build"), VIEWS)


@pytest.fixture(scope="module")
def problem() -> dict:
    """Real LFW views of one person, anchors from two other people, a 6/255 budget."""
    inputs = dict(zip(SPEC.input_names(), real_step_inputs(SPEC)))
    return {"views": inputs["views"], "budget": inputs["bound"][0],
            "anchors": {"sface": SurrogateAnchors(*(inputs[f"{k}_sface"].numpy() for k in ("near", "far", "user")))}}


def test_step_graph_is_verified_standard_onnx(build: Path) -> None:
    manifest = load_manifest(build)
    step = manifest.artefacts[SPEC.name]
    assert step.verification["grad_sign_agreement"] >= SIGN_AGREEMENT
    assert step.verification["grad_rel_l2"] <= GRAD_REL_L2
    assert step.verification["tensorrt_ok"], step.verification["tensorrt_coverage"]
    assert list(step.inputs) == SPEC.input_names() and list(step.inputs)[: len(STATE_INPUTS)] == list(STATE_INPUTS)
    assert step.inputs["views"] == [VIEWS, 3, 112, 112]
    model = onnx.load(str(build / step.file))
    ops = {n.op_type for n in model.graph.node}
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # standard ONNX only
    assert "ConvTranspose" in ops and "GridSample" in ops  # backward convs became transposed convolutions
    assert manifest.artefacts["resample_112"].kind == "table"
    assert step.attributes["pgd"]["momentum"] == PGDConfig().momentum


def _core_run(problem: dict) -> tuple[list[float], np.ndarray]:
    a = problem["anchors"]["sface"]
    target = SurrogateTarget(torch_embedder("sface"), *(torch.from_numpy(v) for v in (a.near, a.far, a.user)))
    result = run_pgd(problem["views"], problem["budget"], [target], PGD, seed=7, eps=4 / 255)
    return result.losses, result.delta.numpy()


@pytest.mark.parametrize("kind", ["ort-cpu", "torch"])
def test_runtime_loop_matches_run_pgd(build: Path, problem: dict, kind: str) -> None:
    losses, delta = _core_run(problem)
    runtime = open_runtime(RuntimeConfig(kind, build))
    got = run_pgd_graphs(runtime, problem["views"].numpy(), problem["budget"].numpy(), problem["anchors"], PGD,
                         source=TorchDiversity(7), eps=4 / 255)
    # Same random stream as run_pgd: the first loss is the same computation, later ones drift only
    # where sign-PGD flips a near-zero gradient component.
    assert got.losses[0] == pytest.approx(losses[0], rel=1e-4)
    assert np.allclose(got.losses, losses, rtol=2e-2)
    assert (np.abs(got.delta - delta) < 1 / 255).mean() > 0.9
    assert np.all(np.abs(got.delta) <= problem["budget"].numpy() + 1e-6)


def test_loop_refuses_other_pgd_constants(build: Path, problem: dict) -> None:
    runtime = open_runtime(RuntimeConfig("ort-cpu", build))
    with pytest.raises(EngineMismatchError, match="momentum"):
        run_pgd_graphs(runtime, problem["views"].numpy(), problem["budget"].numpy(), problem["anchors"],
                       PGDConfig(iterations=1, momentum=0.5))
    with pytest.raises(EngineMismatchError, match="views=3"):
        runtime.stepper(step_key(("sface",), 3, 112, PGD))


def test_manifest_refuses_changed_model_and_falls_back(build: Path, tmp_path: Path, problem: dict) -> None:
    copy = tmp_path / "build"
    shutil.copytree(build, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["artefacts"][SPEC.name]["models"]["sface"] = "0" * 64  # as if exported from another sface file
    (copy / "manifest.json").write_text(json.dumps(raw))
    runtime = open_runtime(RuntimeConfig("ort-cpu", copy))
    with pytest.raises(EngineMismatchError, match="different 'sface' model file"):
        runtime.stepper(step_key(("sface",), VIEWS, 112, PGD))
    def warm(runtime) -> None:  # noqa: ANN001
        runtime.stepper(step_key(("sface",), VIEWS, 112, PGD))

    chosen, refusals = open_first_runtime(("tensorrt", "ort-cpu", "torch"), RuntimeConfig(engine_dir=copy), warm)
    assert chosen.name == "torch" and "TensorRT is not installed" in refusals[0] and "different 'sface'" in refusals[1]
    chosen, refusals = open_first_runtime(("tensorrt", "ort-cpu"), RuntimeConfig(engine_dir=build), warm)
    assert chosen.name == "ort-cpu" and len(refusals) == 1


def test_ort_loop_runs_without_pytorch(build: Path, problem: dict, tmp_path: Path) -> None:
    """The serving path: numpy + ONNX Runtime only; importing torch is made impossible."""
    a = problem["anchors"]["sface"]
    np.savez(tmp_path / "in.npz", views=problem["views"].numpy(), budget=problem["budget"].numpy(),
             near=a.near, far=a.far, user=a.user)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from dataclasses import dataclass
        import numpy as np
        from facecloak.engines.pgd_loop import SurrogateAnchors, run_pgd_graphs
        from facecloak.engines.runtimes import RuntimeConfig, open_runtime

        @dataclass
        class Cfg:  # PGDConfig's values, without importing facecloak.optimise (it imports torch)
            {"; ".join(f"{k} = {v!r}" for k, v in asdict(replace(PGDConfig(), iterations=2)).items())}

        d = np.load(r"{tmp_path / 'in.npz'}")
        runtime = open_runtime(RuntimeConfig("ort-cpu", r"{build}"))
        result = run_pgd_graphs(runtime, d["views"], d["budget"], {{"sface": SurrogateAnchors(d["near"], d["far"], d["user"])}},
                                Cfg(), seed=1, eps=4 / 255)
        assert np.all(np.abs(result.delta) <= d["budget"] + 1e-6) and np.isfinite(result.losses).all()
        assert result.delta.std() > 0.5 / 255  # it moved
        print("OK", "torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "OK False"


def test_numpy_diversity_is_separable_and_in_range() -> None:
    source, cfg = NumpyDiversity(3), PGDConfig()
    for _ in range(20):
        theta, down = source.draw(8, 112, cfg)
        assert theta.shape == (8, 2, 3) and np.all(theta[:, 0, 1] == 0) and np.all(theta[:, 1, 0] == 0)
        assert np.all(np.abs(1 / theta[:, 0, 0] - 1) <= cfg.diversity_scale + 1e-6)
        assert round(112 * cfg.diversity_downsample[0]) <= down <= 112

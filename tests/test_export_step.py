"""The exported PGD step graph (SFace, 2 views): verification, one loop with the torch and ORT steppers, torch-free serving."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from facecloak.engines.manifest import EngineMismatchError, load_manifest
from facecloak.engines.graph_backend import GraphBackend, step_key
from facecloak.engines.runtimes import EngineUnavailableError, RuntimeConfig, open_first_runtime, open_runtime
from facecloak.enroll import DEFAULT_SURROGATES
from facecloak.export.pipeline import ExportConfig, export_step_graph
from facecloak.export.step_graph import STATE_INPUTS, StepSpec
from facecloak.export.verify import GRAD_REL_L2, SIGN_AGREEMENT, real_step_inputs
from facecloak.optimise import Anchors, Budget, PGDConfig, draw_diversity, run_pgd
from facecloak.optimise.torch_backend import TorchBackend
from facecloak.optimise.torch_step import TorchStepper

from .conftest import build_sface_engines

VIEWS = 2
SPEC = StepSpec(("sface",), VIEWS)
PGD = PGDConfig(iterations=3)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sface_engines(tmp_path_factory.mktemp("build"), VIEWS)


def real_problem(spec: StepSpec) -> dict:
    """Real LFW views of one person, anchors from two other people for each surrogate, a 6/255 budget."""
    inputs = dict(zip(spec.input_names(), real_step_inputs(spec)))
    anchors = {m: Anchors(*(inputs[f"{k}_{m}"].numpy() for k in ("near", "far", "user"))) for m in spec.models}
    return {"views": inputs["views"], "budget": inputs["bound"][0], "anchors": anchors}


@pytest.fixture(scope="module")
def problem() -> dict:
    return real_problem(SPEC)


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


def _run(stepper, problem: dict, cfg: PGDConfig = PGD):  # noqa: ANN001
    budget = Budget(problem["budget"].numpy(), 4 / 255)
    members = next(iter(problem["anchors"].values())).members
    return run_pgd(stepper, problem["views"].numpy(), budget, cfg, seed=7, members=members)


def assert_one_loop_two_steppers_agree(build: Path, problem: dict, cfg: PGDConfig) -> None:
    """The core loop with the torch step and with the ORT step graph: same draws, same algorithm."""
    torch_result = _run(TorchBackend().stepper(problem["anchors"], VIEWS, 112, cfg), problem, cfg)
    ort = GraphBackend(open_runtime(RuntimeConfig("ort-cpu", build)))
    graph_result = _run(ort.stepper(problem["anchors"], VIEWS, 112, cfg), problem, cfg)
    # The first loss is the same computation; later ones drift only where sign-PGD flips a
    # near-zero gradient component.
    assert graph_result.losses[0] == pytest.approx(torch_result.losses[0], rel=1e-4)
    assert np.allclose(graph_result.losses, torch_result.losses, rtol=2e-2)
    assert (np.abs(graph_result.delta - torch_result.delta) < 1 / 255).mean() > 0.9
    assert np.all(np.abs(graph_result.delta) <= problem["budget"].numpy() + 1e-6)


def test_one_loop_two_steppers_agree(build: Path, problem: dict) -> None:
    assert_one_loop_two_steppers_agree(build, problem, PGD)


def test_mask_set_step_graph_agrees_with_the_torch_step(tmp_path: Path) -> None:
    """A set of 3 stepped together (stacked deltas and anchors, the separation term) in one exported graph;
    the one-mask graph does not serve it."""
    spec = StepSpec(("sface",), VIEWS, members=3)
    export_step_graph(ExportConfig(out=tmp_path, models=spec.models, views=VIEWS, members=3, verify=True), PGDConfig(),
                      log=lambda _: None)
    problem = real_problem(spec)
    assert problem["anchors"]["sface"].near.shape == (3, 128)
    assert_one_loop_two_steppers_agree(tmp_path, problem, PGD)
    assert load_manifest(tmp_path).artefacts[spec.name].attributes["members"] == 3
    one_mask = {m: Anchors(a.near[0], a.far[0], a.user) for m, a in problem["anchors"].items()}
    backend = GraphBackend(open_runtime(RuntimeConfig("ort-cpu", tmp_path)))
    with pytest.raises(EngineMismatchError, match="member_separation"):  # the weight is baked into the graph
        backend.stepper(problem["anchors"], VIEWS, 112, PGDConfig(member_separation=1.0))
    with pytest.raises(EngineMismatchError, match="has no step graph"):
        backend.stepper(one_mask, VIEWS, 112, PGD)


@pytest.mark.slow  # exporting the two-model step graph takes minutes on 2 cores
def test_default_ensemble_step_graph_agrees_with_the_torch_step(tmp_path: Path) -> None:
    """The default surrogate set, sface + facenet: two embedders in one graph, FaceNet's 112 -> 160 resize
    and its backward included."""
    spec = StepSpec(DEFAULT_SURROGATES, VIEWS)
    export_step_graph(ExportConfig(out=tmp_path, models=spec.models, views=VIEWS, verify=False), PGDConfig(),
                      log=lambda _: None)
    assert_one_loop_two_steppers_agree(tmp_path, real_problem(spec), PGDConfig(iterations=2))


def test_loop_refuses_other_pgd_constants(build: Path, problem: dict) -> None:
    backend = GraphBackend(open_runtime(RuntimeConfig("ort-cpu", build)))
    with pytest.raises(EngineMismatchError, match="momentum"):
        backend.stepper(problem["anchors"], VIEWS, 112, PGDConfig(iterations=1, momentum=0.5))
    with pytest.raises(EngineMismatchError, match="views=3"):
        backend.stepper(problem["anchors"], 3, 112, PGD)


def test_manifest_refuses_changed_model_and_falls_back(build: Path, tmp_path: Path, problem: dict,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT missing, also on a GPU host that has it
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

    with pytest.raises(EngineUnavailableError) as refused:
        open_first_runtime(("tensorrt", "ort-cpu"), RuntimeConfig(engine_dir=copy), warm)
    assert "tensorrt: TensorRT is not installed" in str(refused.value)
    assert "different 'sface'" in str(refused.value)
    chosen, refusals = open_first_runtime(("tensorrt", "ort-cpu"), RuntimeConfig(engine_dir=build), warm)
    assert chosen.name == "ort-cpu" and len(refusals) == 1
    fallback = GraphBackend(runtime, fallback=TorchBackend()).stepper(problem["anchors"], VIEWS, 112, PGD)
    assert isinstance(fallback, TorchStepper)


def test_ort_loop_runs_without_pytorch(build: Path, problem: dict, tmp_path: Path) -> None:
    """The serving path: the core loop, numpy + ONNX Runtime only; importing torch is made impossible."""
    a = problem["anchors"]["sface"]
    np.savez(tmp_path / "in.npz", views=problem["views"].numpy(), budget=problem["budget"].numpy(),
             near=a.near, far=a.far, user=a.user)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from facecloak.engines.graph_backend import GraphBackend
        from facecloak.engines.runtimes import RuntimeConfig, open_runtime
        from facecloak.optimise import Anchors, Budget, PGDConfig, run_pgd

        d = np.load(r"{tmp_path / 'in.npz'}")
        cfg = PGDConfig(iterations=2)
        backend = GraphBackend(open_runtime(RuntimeConfig("ort-cpu", r"{build}")))
        step = backend.stepper({{"sface": Anchors(d["near"], d["far"], d["user"])}}, {VIEWS}, 112, cfg)
        result = run_pgd(step, d["views"], Budget(d["budget"], 4 / 255), cfg, seed=1)
        assert np.all(np.abs(result.delta) <= d["budget"] + 1e-6) and np.isfinite(result.losses).all()
        assert result.delta.std() > 0.5 / 255  # it moved
        print("OK", "torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "OK False"


def test_diversity_draws_are_separable_and_in_range() -> None:
    rng, cfg = np.random.default_rng(3), PGDConfig()
    for _ in range(20):
        draw = draw_diversity(rng, 8, 112, cfg)
        theta, down = draw.theta, draw.down_size
        assert theta.shape == (8, 2, 3) and np.all(theta[:, 0, 1] == 0) and np.all(theta[:, 1, 0] == 0)
        assert np.all(np.abs(1 / theta[:, 0, 0] - 1) <= cfg.diversity_scale + 1e-6)
        assert round(112 * cfg.diversity_downsample[0]) <= down <= 112

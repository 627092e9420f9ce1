"""Core ML and TFLite exports of the on-device op, checked on Linux against torch and the server apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecloak.clients import ondevice_mil as mil
from facecloak.export.cli import main as export_main
from facecloak.export.ondevice import (
    MAX_MODEL_BYTES, ExportUnavailableError, export_coreml, export_tflite, litert_python, model_bytes,
)
from facecloak.clients.ondevice_verify import (
    TEST_BUDGET, agreement, compare, compare_to_torch, coreml_runner, lfw_cases, random_mask_bytes, tflite_runner,
    torch_runner,
)

TFLITE_TILE = 128  # small tile: the test ROIs (LFW faces, ~250 px) then span several tiles, edge tiles included


@pytest.fixture(scope="module")
def cases():
    return lfw_cases(2)


@pytest.fixture(scope="module")
def mlpackage(tmp_path_factory) -> Path:
    return export_coreml(tmp_path_factory.mktemp("coreml") / "op.mlpackage")


def test_coreml_interface_and_ops(mlpackage):
    spec = mil.load_program(mlpackage)
    inputs, outputs = mil.interface(spec)
    assert [(t.name, t.dtype) for t in inputs] == [("roi", "FLOAT32"), ("mask", "FLOAT32"), ("matrix", "FLOAT32"),
                                                   ("budget", "FLOAT32")]
    assert inputs[0].shape == ((1, 1), (8, 4096), (8, 4096), (3, 3))
    assert inputs[1].shape == (112, 112, 3) and inputs[2].shape == (2, 3) and inputs[3].shape == (3,)
    assert [(t.name, t.dtype) for t in outputs] == [("cloaked", "FLOAT32")]
    used = mil.check_ops(spec)
    assert {"resample", "round", "clip"} <= used
    assert {"gather", "avg_pool", "sqrt", "minimum", "maximum"} <= used  # the frame sample and the budget
    assert model_bytes(mlpackage) <= MAX_MODEL_BYTES


def test_coreml_whitelist_rejects_unknown_ops(mlpackage):
    spec = mil.load_program(mlpackage)
    mil.operations(spec)[-1].type = "sin"
    with pytest.raises(mil.CoreMLCheckError, match="sin"):
        mil.check_ops(spec)


@pytest.mark.parametrize("budget", [None, TEST_BUDGET], ids=["format 2", "format 3"])
def test_coreml_program_matches_torch_and_server(mlpackage, cases, budget):
    runner, reference = coreml_runner(mlpackage), torch_runner()
    for seed, case in enumerate(cases):
        mask = random_mask_bytes(seed + 10, amplitude_levels=32 if budget else 16, perceptual=budget)
        result = agreement(runner, mask, case)
        assert result.max_levels <= 1 and result.share < 0.005, result
        assert compare(reference, mask, case) <= 1
        assert compare_to_torch(runner, mask, case) <= 1


def test_coreml_output_stays_in_range_for_garbage_inputs(mlpackage):
    """Core ML has no uint8 to saturate for us: the float output must stay finite and within 0..255."""
    spec, nan = mil.load_program(mlpackage), float("nan")
    roi = np.full((1, 16, 16, 3), 250.0, np.float32)
    mask = np.full((112, 112, 3), 200.0, np.float32)
    good = np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 30.0]], np.float32)
    for matrix, budget in [(np.full((2, 3), nan, np.float32), np.array([255.0, 1.0, 1.0], np.float32)),
                           (good, np.full(3, nan, np.float32)), (np.zeros((2, 3), np.float32), np.zeros(3, np.float32))]:
        out = mil.evaluate(spec, {"roi": roi, "mask": mask, "matrix": matrix, "budget": budget})["cloaked"]
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255


def test_tflite_export_fails_loudly_without_its_environment(tmp_path):
    with pytest.raises(ExportUnavailableError, match="make_litert_env.sh"):
        export_tflite(tmp_path / "op.tflite", python=str(tmp_path / "no-such-python"))
    assert not (tmp_path / "op.tflite").exists()
    assert export_main(["ondevice", "--out", str(tmp_path), "--formats", "tflite", "--litert-python", str(tmp_path / "nope")]) == 9
    assert export_main(["ondevice", "--out", str(tmp_path), "--formats", "onnx,tensorrt"]) == 2  # BAD_OPTION, nothing exported
    assert not (tmp_path / "facecloak_addclip_112.onnx").exists()


def test_tflite_runs_in_litert_interpreter_and_matches_server(tmp_path, cases):
    try:
        litert_python()
    except ExportUnavailableError as exc:
        pytest.skip(f"CI must build the litert venv first (clients/make_litert_env.sh): {exc}")
    path = export_tflite(tmp_path / "op.tflite", tile=TFLITE_TILE)
    assert 0 < path.stat().st_size <= MAX_MODEL_BYTES
    stages = tflite_runner(path, TFLITE_TILE)  # signatures sample, budget, addclip driven by run_tiled
    for seed, case in enumerate(cases):
        for budget in (None, TEST_BUDGET):
            mask = random_mask_bytes(seed + 20, amplitude_levels=32 if budget else 16, perceptual=budget)
            assert compare(stages, mask, case) <= 1
            assert compare_to_torch(stages, mask, case) <= 1


def test_ondevice_subcommand_hooks_into_a_parent_cli(tmp_path, capsys):
    import argparse

    from facecloak.export.ondevice import add_ondevice_parser

    parser = argparse.ArgumentParser(prog="facecloak-export")
    add_ondevice_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ondevice", "--out", str(tmp_path), "--formats", "onnx"])
    assert args.func(args) == 0
    assert (tmp_path / "facecloak_addclip_112.onnx").stat().st_size > 0
    assert "onnx" in capsys.readouterr().out

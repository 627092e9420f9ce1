"""The facecloak-export command line: subcommands, pass-through to other stages' exporters, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecloak.engines.manifest import load_manifest, sha256_file
from facecloak.export import cli


def test_help_lists_every_stage() -> None:
    text = cli.build_parser().format_help()
    for command in ("surrogates", "step", "build", "triton", "ondevice", "arc2face", "all"):
        assert command in text


def test_surrogates_command_writes_manifest(tmp_path: Path) -> None:
    assert cli.main(["surrogates", "--models", "sface", "--no-verify", "--out", str(tmp_path)]) == 0
    artefact = load_manifest(tmp_path).artefacts["surrogate_sface"]
    assert sha256_file(tmp_path / artefact.file) == artefact.sha256 and "max_abs_error" not in artefact.verification


def test_ondevice_subcommand_is_recorded(tmp_path: Path) -> None:
    folder = tmp_path / "ondevice"
    assert cli.main(["ondevice", "--out", str(folder), "--formats", "onnx"]) == 0
    (artefact,) = cli.record_ondevice(tmp_path, folder, 1.0)
    assert artefact.kind == "ondevice" and artefact.file.startswith("ondevice/") and artefact.file.endswith(".onnx")
    assert load_manifest(tmp_path).artefacts[artefact.name].sha256 == sha256_file(tmp_path / artefact.file)


def test_bad_options_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["surrogates", "--models", "arcface", "--out", str(tmp_path)]) == 2
    assert "unknown face-recognition model 'arcface'" in capsys.readouterr().err
    assert cli.main(["step", "--models", "sface", "--views", "0", "--out", str(tmp_path)]) == 2
    assert "views must be in 1..64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["surrogates", "--models", ","])

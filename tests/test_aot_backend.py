"""The default fast backend: the AOT-compiled step, prepared once into the user cache, with fallback."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facecloak import assemble
from facecloak.assemble import EnrollerSpec, build_enroller, prepare_aot
from facecloak.engines.manifest import MANIFEST_NAME
from facecloak.enroll import EnrollConfig
from facecloak.optimise import PGDConfig

pytestmark = pytest.mark.slow
PGD = PGDConfig(iterations=3)
SPEC = EnrollerSpec(backend="auto", surrogates=("sface",), views=2, pgd=PGD, view_backend="augment")
# Compared in float32: bfloat16 convolutions (the default on some CPUs) round differently in the compiled and eager
# convolutions, which sign-PGD turns into more flipped components than the comparison allows.
CONFIG = EnrollConfig(surrogates=("sface",), views=2, check_views=1, seed=4, pgd=replace(PGD, bf16_convolutions=False))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACECLOAK_CACHE", str(folder))
        said: list[str] = []
        assembled = build_enroller(SPEC, say=said.append)  # compiles the step once (minutes on 2 cores)
        assert assembled.backend == "aot-cpu", assembled.notes
        assert len(said) == 1 and "preparing the fast backend" in said[0]
    return folder


def test_auto_prepares_once_and_matches_pytorch(cache: Path, selfie: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECLOAK_CACHE", str(cache))
    said: list[str] = []
    fast = build_enroller(SPEC, say=said.append)
    assert fast.backend == "aot-cpu" and said == []  # found in the cache: nothing compiled again
    (folder,) = (cache / "aot").iterdir()
    assert json.loads((folder / MANIFEST_NAME).read_text())["artefacts"]
    reference = build_enroller(replace(SPEC, backend="torch-cpu")).enroller.enroll(selfie, CONFIG)
    got = fast.enroller.enroll(selfie, CONFIG)
    # One loop, same draws: the masks differ only where rounding flips a near-zero gradient's sign.
    assert (np.abs(got.mask.delta - reference.mask.delta) < 1 / 255).mean() > 0.9
    assert abs(got.self_check[0].after - reference.self_check[0].after) < 0.05
    assert got.self_check[0].after < got.self_check[0].before - 0.05


def test_other_shapes_and_changed_settings_use_their_own_cache_key(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECLOAK_CACHE", str(cache))
    base = assemble.aot_folder(SPEC)
    assert base.exists()
    assert assemble.aot_folder(replace(SPEC, views=3)) != base
    assert assemble.aot_folder(replace(SPEC, pgd=replace(PGD, momentum=0.5))) != base
    assert assemble.aot_folder(replace(SPEC, pgd=replace(PGD, iterations=7))) == base  # not compiled in


def test_a_failed_preparation_falls_back_with_one_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECLOAK_CACHE", str(tmp_path))

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeError("no C++ compiler found\nlong compiler log")

    monkeypatch.setattr(assemble, "compile_aot", broken)
    assembled = build_enroller(SPEC)
    assert assembled.backend == "torch-cpu"
    assert assembled.notes[-1] == "aot-cpu unavailable, using torch-cpu: no C++ compiler found"
    assert not any(p.name.startswith(".") for p in (tmp_path / "aot").iterdir())  # no scratch folder left


def test_a_lost_race_uses_the_winners_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECLOAK_CACHE", str(tmp_path))
    final = assemble.aot_folder(SPEC)

    def racing(spec: EnrollerSpec, out: Path) -> None:
        out.mkdir(parents=True)
        (out / MANIFEST_NAME).write_text("{}")  # our copy
        final.mkdir(parents=True)
        (final / MANIFEST_NAME).write_text('{"winner": true}')  # another process published first

    monkeypatch.setattr(assemble, "compile_aot", racing)
    assert prepare_aot(SPEC, say=lambda _: None) == final
    assert json.loads((final / MANIFEST_NAME).read_text()) == {"winner": True}
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # the loser's scratch copy is gone


def test_a_bf16_step_is_compiled_under_its_own_key_and_learns_like_the_pytorch_bf16_step(
        cache: Path, selfie: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECLOAK_CACHE", str(cache))
    pgd = replace(PGD, bf16_surrogates=True)
    spec, config = replace(SPEC, pgd=pgd), replace(CONFIG, pgd=pgd)
    assert assemble.aot_folder(spec) != assemble.aot_folder(SPEC)
    said: list[str] = []
    fast = build_enroller(spec, say=said.append)
    assert fast.backend == "aot-cpu" and len(said) == 1  # compiled once more, for this key
    manifest = json.loads((assemble.aot_folder(spec) / MANIFEST_NAME).read_text())
    (artefact,) = (a for a in manifest["artefacts"].values() if a["kind"] == "aot-step")
    assert artefact["attributes"]["pgd"]["bf16_surrogates"] == 1.0
    reference = build_enroller(replace(spec, backend="torch-cpu")).enroller.enroll(selfie, config)
    got = fast.enroller.enroll(selfie, config)
    assert (np.abs(got.mask.delta - reference.mask.delta) < 1 / 255).mean() > 0.8
    assert abs(got.self_check[0].after - reference.self_check[0].after) < 0.05
    assert got.self_check[0].after < got.self_check[0].before - 0.05

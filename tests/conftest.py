"""Shared fixtures: real LFW photos and models from ../shared/assets, loaded once per test process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facecloak.assets import assets_dir
from facecloak.backend_names import BACKEND_ENV
from facecloak.faces import FaceDetector
from facecloak.imageio import read_image

# The suite's enrollments (and the CLI runs it starts) use PyTorch eager, the reference: preparing the
# default AOT backend takes minutes per request shape. tests/test_aot_backend.py tests "auto" itself.
os.environ.setdefault(BACKEND_ENV, "torch-cpu")



@pytest.fixture(autouse=True)
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Calls of ``flush_subnormals`` made in the test process, recorded instead of made: the process keeps IEEE
    subnormals (hypothesis refuses to draw floats under flush-to-zero, and no test may depend on which ran
    first). Subprocesses (the CLI and server runs the suite starts) flush as in production."""
    calls: list[bool] = []
    monkeypatch.setattr("facecloak.models.weights.flush_subnormals", lambda: calls.append(True) or True)
    return calls


PEOPLE = ["Abdullah_Gul", "Tony_Blair", "Serena_Williams", "Hu_Jintao", "Laura_Bush"]


@pytest.fixture(scope="session")
def lfw() -> Path:
    return assets_dir() / "faces" / "lfw"


def person_photos(lfw: Path, name: str) -> list[Path]:
    return sorted((lfw / name).glob("*.jpg"))


@pytest.fixture(scope="session")
def selfie_path(lfw: Path) -> Path:
    return person_photos(lfw, "Tony_Blair")[0]


@pytest.fixture(scope="session")
def selfie(selfie_path: Path) -> np.ndarray:
    return read_image(selfie_path)


@pytest.fixture(scope="session")
def detector() -> FaceDetector:
    return FaceDetector()


def build_sface_engines(out: Path, views: int) -> Path:
    """Export the sface surrogate and its PGD step graph for ``views`` views into ``out`` (ONNX + manifest)."""
    from facecloak.export.pipeline import ExportConfig, export_step_graph, export_surrogates
    from facecloak.optimise import PGDConfig

    cfg = ExportConfig(out=out, models=("sface",), views=views)
    export_surrogates(cfg, log=lambda _: None)
    export_step_graph(cfg, PGDConfig(), log=lambda _: None)
    return out


def cloaked_sface_similarity(photos: list[np.ndarray], deltas: list[np.ndarray]) -> float:
    """Mean pairwise sface cosine of every photo's aligned face plus every (S, S, 3) delta: how alike the
    cloaked faces look to a recogniser (one photo and a set's members, or several photos and one mask)."""
    from facecloak.faces import AlignedFrame, align_largest_face, to_chw_float
    from facecloak.models import numpy_torch_embedder

    detector = FaceDetector()
    crops = [to_chw_float(align_largest_face(detector, p, AlignedFrame()).crop).reshape(3, 112, 112) for p in photos]
    cloaked = np.stack([np.clip(c + d.transpose(2, 0, 1), 0, 1) for c in crops for d in deltas]).astype(np.float32)
    emb = numpy_torch_embedder("sface")(cloaked)
    gram = emb @ emb.T
    return float((gram.sum() - np.trace(gram)) / (len(emb) * (len(emb) - 1)))

"""What every runtime of exported graphs shares: its config, the step-graph key, the interface, and
the manifest checks. ``runtimes`` (ONNX Runtime, the router) and ``tensorrt_runtime`` build on it.

A runtime hands out two kinds of callables, numpy in and numpy out:
- ``embedder(model)``: aligned RGB faces (B, 3, S, S) in [0, 1] -> unit embeddings (B, D);
- ``stepper(key)``: one PGD iteration, feeds named as the exported step graph's inputs.

The ONNX Runtime and TensorRT runtimes load only what a build folder's manifest lists, after
checking it against the models this process serves, and never import PyTorch: the serving path
runs enrollment's optimisation with numpy + ONNX Runtime alone (the core's loop, ``engines.graph_backend``'s
stepper). PyTorch eager is not a runtime here: it is the core's own ``optimise.torch_backend``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from facecloak.assets import assets_dir
from facecloak.errors import BadOptionError, FaceCloakError

from .manifest import Artefact, EngineMismatchError, Manifest, check_artefact, load_manifest, sha256_file

RUNTIME_KINDS = ("ort-cpu", "ort-cuda", "tensorrt", "aot-cpu")
ENGINES_ENV = "FACECLOAK_ENGINES"
DEFAULT_BUILD_DIR = Path(__file__).resolve().parent / "build"
Embedder = Callable[[np.ndarray], np.ndarray]
GraphCall = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]  # named feeds -> named outputs


class EngineUnavailableError(FaceCloakError):
    """The requested runtime cannot run on this machine (package, GPU or engine missing)."""

    reason = "RUNTIME_UNAVAILABLE"
    exit_code = 11


def default_build_dir() -> Path:
    return Path(os.environ.get(ENGINES_ENV, DEFAULT_BUILD_DIR))


@dataclass(frozen=True)
class RuntimeConfig:
    kind: str = "ort-cpu"
    engine_dir: Path = field(default_factory=default_build_dir)
    threads: int = 0  # ORT intra-op threads; 0 = ORT's default (all cores)
    # Model name -> path of the ONNX file this process serves; None = the asset file recorded at export.
    model_files: Mapping[str, str] | None = None
    verify_files: bool = True  # hash every artefact against the manifest when loading it

    def __post_init__(self) -> None:
        if self.kind not in RUNTIME_KINDS:
            raise BadOptionError(f"unknown runtime {self.kind!r}; choose one of {', '.join(RUNTIME_KINDS)}")


@dataclass(frozen=True)
class StepKey:
    """Which step graph: surrogate set, number of views, frame size, and the PGD constants it bakes in."""

    models: tuple[str, ...]
    views: int
    size: int
    pgd: tuple[tuple[str, float], ...]  # (field, value) pairs, see facecloak.optimise.config.BAKED_FIELDS
    members: int = 0  # K of a mask set stepped together (stacked deltas and anchors), 0 for one mask


class Runtime(Protocol):
    name: str

    def embedder(self, model: str) -> Embedder: ...

    def stepper(self, key: StepKey) -> GraphCall: ...

    def resample(self, size: int, down_size: int) -> np.ndarray: ...


def baked_matches(recorded: Mapping[str, float], wanted: Sequence[tuple[str, float]]) -> list[str]:
    """Names of the PGD constants whose exported value differs from the requested one."""
    return [k for k, v in wanted if k not in recorded or not np.isclose(float(recorded[k]), float(v), rtol=1e-6, atol=0)]


class ManifestRuntime:
    """Shared part of the runtimes that execute exported artefacts listed in a manifest."""

    name = "manifest"

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.folder = Path(config.engine_dir)
        self.manifest: Manifest = load_manifest(self.folder)
        self._tables: dict[int, np.ndarray] = {}

    def _model_hashes(self, artefact: Artefact) -> dict[str, str]:
        files = dict(self.config.model_files or {})
        recorded = artefact.attributes.get("model_files", {})
        return {m: sha256_file(files.get(m) or assets_dir() / recorded[m]) for m in artefact.models if m in files or m in recorded}

    def _checked(self, artefact: Artefact) -> Path:
        return check_artefact(self.folder, artefact, self._model_hashes(artefact), self.config.verify_files)

    def surrogate_artefact(self, model: str, kind: str = "surrogate") -> Artefact:
        for artefact in self.manifest.of_kind(kind):
            if list(artefact.models) == [model]:
                return artefact
        raise EngineMismatchError(f"{self.folder} has no {kind} graph for model {model!r}: "
                                  f"run `facecloak-export surrogates --models {model} --out {self.folder}`")

    def step_artefact(self, key: StepKey, kind: str = "step") -> Artefact:
        candidates = [a for a in self.manifest.of_kind(kind) if tuple(a.models) == key.models
                      and a.attributes.get("views") == key.views and a.attributes.get("size") == key.size
                      and a.attributes.get("members", 0) == key.members]
        if not candidates:
            members = f" --members {key.members}" if key.members else ""
            raise EngineMismatchError(
                f"{self.folder} has no {kind} graph for models={','.join(key.models)}, views={key.views}, size={key.size}"
                f"{f', members={key.members}' if key.members else ''}: "
                f"run `facecloak-export step --models {','.join(key.models)} --views {key.views}{members} --out {self.folder}`")
        artefact = candidates[0]
        if differ := baked_matches(artefact.attributes.get("pgd", {}), key.pgd):
            raise EngineMismatchError(f"{artefact.name} bakes in other PGD constants ({', '.join(differ)}): "
                                      f"exported {artefact.attributes.get('pgd')}, requested {dict(key.pgd)}; re-export the step")
        return artefact

    def resample(self, size: int, down_size: int) -> np.ndarray:
        if size not in self._tables:
            table = next((a for a in self.manifest.of_kind("table") if a.attributes.get("size") == size), None)
            if table is None:
                raise EngineMismatchError(f"{self.folder} has no resampling table for {size} px: export a step graph first")
            self._tables[size] = np.load(self._checked(table))
        if not 8 <= down_size <= size:
            raise BadOptionError(f"down-sampling size must be in 8..{size}, got {down_size}")
        return self._tables[size][down_size]

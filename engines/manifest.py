"""The build manifest: what was exported/built, from which models, for which runtime and GPU.

One ``manifest.json`` per output folder. A runtime loads artefacts only through a manifest and
refuses them, with the reason, when the models on disk or the runtime itself do not match.
Torch-free on purpose: the serving path reads manifests without PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from facecloak.errors import FaceCloakError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class EngineMismatchError(FaceCloakError):
    """Exported graphs or engines do not match the models, runtime or GPU they are about to run on."""

    reason = "ENGINE_MISMATCH"
    exit_code = 9


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (cached per path/size/mtime: model files are hashed once per process)."""
    stat = Path(path).stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


@dataclass
class Artefact:
    """One file in the build folder: a surrogate graph, a step graph, a lookup table or an engine."""

    name: str
    kind: str  # "surrogate" | "step" | "table" | "ondevice" | "engine"
    file: str  # relative to the manifest's folder
    sha256: str
    models: dict[str, str] = field(default_factory=dict)  # model name -> sha256 of its source ONNX file
    opset: int | None = None
    precision: str = "fp32"
    inputs: dict[str, list[int | str]] = field(default_factory=dict)  # str dims are dynamic ("batch")
    outputs: dict[str, list[int | str]] = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)  # views, size, baked PGD constants, profiles, ...
    verification: dict = field(default_factory=dict)  # figures measured at export time
    seconds: float = 0.0  # time it took to produce


@dataclass
class Manifest:
    artefacts: dict[str, Artefact] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    created_utc: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)  # facecloak, torch, onnx, onnxruntime, tensorrt, cuda
    gpu: dict[str, str | None] = field(default_factory=dict)  # name, compute_capability (engine builds only)
    host: str = field(default_factory=platform.platform)

    def add(self, artefact: Artefact) -> None:
        self.artefacts[artefact.name] = artefact
        self.created_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def of_kind(self, kind: str) -> list[Artefact]:
        return [a for a in self.artefacts.values() if a.kind == kind]

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MANIFEST_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)  # atomic: a server reading the folder never sees half a manifest
        return path


def load_manifest(folder: Path) -> Manifest:
    """Read ``folder/manifest.json`` with a clear error when it is missing or not ours."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise EngineMismatchError(f"no {MANIFEST_NAME} in {folder}: run `facecloak-export all --out {folder}` first")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format_version") != FORMAT_VERSION:
            raise EngineMismatchError(f"{path} has format version {raw.get('format_version')}, expected {FORMAT_VERSION}")
        artefacts = {name: Artefact(**entry) for name, entry in raw.pop("artefacts").items()}
        return Manifest(artefacts=artefacts, **raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EngineMismatchError(f"{path} is not a facecloak manifest: {exc}") from None


def load_or_new(folder: Path) -> Manifest:
    """The folder's manifest, or an empty one when the folder has none yet (first export)."""
    return load_manifest(folder) if (Path(folder) / MANIFEST_NAME).is_file() else Manifest()


def check_artefact(folder: Path, artefact: Artefact, model_hashes: dict[str, str], verify_file: bool = True) -> Path:
    """Path of the artefact's file after checking its models and (optionally) its own hash.

    ``model_hashes``: sha256 of the model files this process would serve with, by model name.
    """
    for model, expected in artefact.models.items():
        actual = model_hashes.get(model)
        if actual is None:
            raise EngineMismatchError(f"{artefact.name} was built for model {model!r}, which this server does not load")
        if actual != expected:
            raise EngineMismatchError(f"{artefact.name} was built from a different {model!r} model file "
                                      f"(sha256 {expected[:12]}..., serving {actual[:12]}...): re-export")
    path = Path(folder) / artefact.file
    if not path.is_file():
        raise EngineMismatchError(f"{artefact.name}: file {path} is missing")
    if verify_file and sha256_file(path) != artefact.sha256:
        raise EngineMismatchError(f"{artefact.name}: {path} does not match its manifest hash (corrupt or replaced)")
    return path

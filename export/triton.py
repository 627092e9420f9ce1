"""A Triton Inference Server model repository from a build folder (``facecloak-export triton``).

One model per surrogate graph (dynamic batching: requests from many enrollments are merged into one
batch) and one per step graph (no batching: each request carries one enrollment's whole state).
``backend="onnx"`` serves the ONNX graphs with Triton's ONNX Runtime backend; ``"tensorrt"`` serves
the engines of ``<build>/tensorrt`` (build them on the same GPU model as the Triton fleet).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from facecloak.engines.manifest import Artefact, load_manifest
from facecloak.engines.tensorrt_runtime import ENGINE_SUBDIR
from facecloak.errors import BadOptionError

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}


@dataclass(frozen=True)
class TritonConfig:
    folder: Path  # the export folder (manifest.json)
    repo: Path  # where the model repository is written
    backend: str = "onnx"
    max_batch: int = 64
    preferred_batches: tuple[int, ...] = (8, 16, 32)
    queue_delay_us: int = 2000  # how long Triton may hold a request to fill a batch
    instances: int = 1  # model instances per GPU

    def __post_init__(self) -> None:
        if self.backend not in PLATFORMS:
            raise BadOptionError(f"backend must be one of {sorted(PLATFORMS)}, got {self.backend!r}")


def _tensor(name: str, dims: list[int | str], batched: bool) -> str:
    shape = list(dims[1:]) if batched else list(dims)
    if any(isinstance(d, str) for d in shape):
        raise BadOptionError(f"{name}: only the batch dimension may be dynamic, got {dims}")
    if not shape:  # Triton needs at least one dim: a scalar travels as [1] reshaped to []
        return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}'
    return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {", ".join(str(d) for d in shape)} ] }}'


def model_config(artefact: Artefact, cfg: TritonConfig) -> str:
    """config.pbtxt text for one artefact."""
    platform, _ = PLATFORMS[cfg.backend]
    batched = all(dims and isinstance(dims[0], str) for dims in artefact.inputs.values())
    lines = [f'name: "{artefact.name}"', f'platform: "{platform}"', f"max_batch_size: {cfg.max_batch if batched else 0}"]
    lines += ["input ["] + [",\n".join(_tensor(n, d, batched) for n, d in artefact.inputs.items())] + ["]"]
    lines += ["output ["] + [",\n".join(_tensor(n, d, batched) for n, d in artefact.outputs.items())] + ["]"]
    if batched:
        preferred = ", ".join(str(b) for b in cfg.preferred_batches if b <= cfg.max_batch)
        lines.append(f"dynamic_batching {{ preferred_batch_size: [ {preferred} ] max_queue_delay_microseconds: {cfg.queue_delay_us} }}")
    lines.append(f"instance_group [ {{ count: {cfg.instances} kind: KIND_GPU }} ]")
    return "\n".join(lines) + "\n"


def emit_repository(cfg: TritonConfig) -> list[Path]:
    """Write ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/1/<model file>``; returns the model dirs."""
    folder = cfg.folder / ENGINE_SUBDIR if cfg.backend == "tensorrt" else cfg.folder
    manifest = load_manifest(folder)
    _, filename = PLATFORMS[cfg.backend]
    written = []
    for artefact in manifest.of_kind("surrogate") + manifest.of_kind("step"):
        model_dir = cfg.repo / artefact.name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / artefact.file, model_dir / "1" / filename)
        (model_dir / "config.pbtxt").write_text(model_config(artefact, cfg))
        written.append(model_dir)
    if not written:
        raise BadOptionError(f"{folder} lists no surrogate or step graphs to serve")
    return written

"""TensorRT engines from the exported ONNX graphs (``facecloak-export build``), on a GPU host.

TensorRT is imported lazily: on a machine without it (or without a GPU) the build stops with
``EngineUnavailableError`` and a non-zero exit; no placeholder engine is ever written. Each engine
gets an optimisation profile over the batch dimension, the requested precision where accuracy holds
(the engine is checked against ONNX Runtime in fp32 and rebuilt in fp32 otherwise), and a shared
timing cache so rebuilds are fast. The engines and their manifest go to ``<build>/tensorrt/``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from facecloak.engines.manifest import Artefact, Manifest, load_manifest, sha256_file
from facecloak.engines.runtime_base import EngineUnavailableError
from facecloak.engines.tensorrt_runtime import ENGINE_SUBDIR, gpu_info, import_tensorrt
from facecloak.errors import BadOptionError

PRECISIONS = ("fp32", "fp16", "bf16")
TIMING_CACHE = "timing.cache"
Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuildConfig:
    folder: Path  # the export folder holding manifest.json and the ONNX graphs
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 64
    workspace_gib: float = 4.0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BadOptionError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise BadOptionError("batch sizes must satisfy 1 <= min <= opt <= max")


def profile_shapes(artefact: Artefact, cfg: BuildConfig) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shape per input; symbolic dimensions are the batch (1..max), others fixed."""
    shapes = {}
    for name, dims in artefact.inputs.items():
        pick = [tuple(cfg.min_batch if isinstance(d, str) else d for d in dims),
                tuple(cfg.opt_batch if isinstance(d, str) else d for d in dims),
                tuple(cfg.max_batch if isinstance(d, str) else d for d in dims)]
        shapes[name] = (pick[0], pick[1], pick[2])
    return shapes


def _build_one(trt: ModuleType, builder, logger, cache, onnx_path: Path, artefact: Artefact, cfg: BuildConfig,  # noqa: ANN001
               precision: str) -> bytes:
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineUnavailableError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * (1 << 30)))
    config.set_timing_cache(cache, ignore_mismatch=False)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(artefact, cfg).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineUnavailableError(f"TensorRT failed to build {onnx_path.name} in {precision} (see the log above)")
    return bytes(serialized)


def build_engines(cfg: BuildConfig, accuracy_ok: Callable[[Path, Artefact], dict] | None = None,
                  log: Callable[[str], None] = print) -> Manifest:
    """Build one engine per surrogate/step graph of ``cfg.folder``; returns the engines' manifest.

    ``accuracy_ok(engine_path, artefact)`` returns figures with an ``ok`` flag (default: compare the
    engine with ONNX Runtime on real faces); a reduced-precision engine that fails is rebuilt in fp32.
    """
    trt = import_tensorrt()
    gpu = gpu_info()
    source = load_manifest(cfg.folder)
    out = cfg.folder / ENGINE_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_path = out / TIMING_CACHE
    cache = builder.create_builder_config().create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    if accuracy_ok is None:
        from .verify import engine_agreement

        accuracy_ok = engine_agreement
    manifest = Manifest(versions={**source.versions, "tensorrt": trt.__version__, "cuda": gpu["cuda"]},
                        gpu={"name": gpu["name"], "compute_capability": gpu["compute_capability"]})
    for artefact in source.of_kind("surrogate") + source.of_kind("step"):
        start = time.perf_counter()
        onnx_path = cfg.folder / artefact.file
        engine_path = out / f"{artefact.name}.plan"
        for precision in dict.fromkeys([cfg.precision, "fp32"]):
            engine_path.write_bytes(_build_one(trt, builder, logger, cache, onnx_path, artefact, cfg, precision))
            engine = Artefact(**{**artefact.__dict__, "file": engine_path.name, "sha256": sha256_file(engine_path),
                                 "precision": precision, "verification": {}})
            engine.attributes = {**artefact.attributes, "onnx": artefact.file, "onnx_sha256": artefact.sha256,
                                 "profile": {k: list(map(list, v)) for k, v in profile_shapes(artefact, cfg).items()}}
            engine.verification = accuracy_ok(engine_path, engine)
            if engine.verification.get("ok"):
                break
            log(f"{artefact.name}: {precision} engine out of tolerance {engine.verification}; rebuilding in fp32")
        engine.seconds = round(time.perf_counter() - start, 1)
        manifest.add(engine)
        log(f"engine {engine_path} ({engine.precision}, {engine.seconds} s)")
    cache_path.write_bytes(bytes(cache.serialize()))
    for table in source.of_kind("table"):  # the PGD loop's lookup tables travel with the engines
        shutil.copy2(cfg.folder / table.file, out / table.file)
        manifest.add(table)
    manifest.save(out)
    return manifest

"""Export stages that write verified artefacts into a build folder and record them in its manifest."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

import facecloak
from facecloak.engines.aot_runtime import cpu_fingerprint
from facecloak.engines.manifest import Artefact, Manifest, load_or_new, sha256_file
from facecloak.engines.runtimes import default_build_dir
from facecloak.enroll import DEFAULT_SURROGATES
from facecloak.errors import BadOptionError
from facecloak.models import get_card
from facecloak.optimise import PGDConfig

from .opcoverage import check_tensorrt_coverage
from .step_graph import STEP_OUTPUTS, StepSpec, compile_step_aot, example_inputs, export_step, resample_table
from .surrogates import export_surrogate
from .verify import model_hash_inputs, verify_step, verify_surrogate

Log = Callable[[str], None]


def quiet(_: str) -> None:
    """A ``Log`` that drops every line (a module-level function, so it can cross to a child process)."""


def without_warnings() -> None:
    """Initialiser of a compiling child process: its Python warnings (PyTorch's deprecations inside torch.export)
    are not the user's to act on, and the child shares the server's stderr, which carries JSON lines only.
    Failures still reach the parent as exceptions."""
    import warnings  # noqa: PLC0415

    warnings.simplefilter("ignore")


@dataclass(frozen=True)
class ExportConfig:
    out: Path = default_build_dir()
    models: tuple[str, ...] = DEFAULT_SURROGATES
    views: int = 8
    size: int = 112
    members: int = 0  # the step of a mask set of K stepped together (StepSpec.members); 0 = one mask
    verify: bool = True
    opset: int = 18  # TensorRT 10 parses up to 20; ORT 1.20+ runs 18


def runtime_versions() -> dict[str, str | None]:
    import torch

    try:
        import onnxruntime
    except ImportError:  # a plain install prepares AOT steps without ONNX Runtime
        onnxruntime = None
    return {"facecloak": facecloak.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__ if onnxruntime else None, "tensorrt": None, "cuda": None}


def _shapes(values) -> dict[str, list[int | str]]:  # noqa: ANN001 - repeated ValueInfoProto
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _artefact(out: Path, path: Path, kind: str, models: tuple[str, ...], model: onnx.ModelProto, **attributes) -> Artefact:
    files = model_hash_inputs(models)
    coverage = check_tensorrt_coverage(model)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return Artefact(
        name=path.stem, kind=kind, file=path.relative_to(out).as_posix(), sha256=sha256_file(path),
        models={m: sha256_file(f) for m, f in files.items()}, opset=opset,
        inputs=_shapes(model.graph.input), outputs=_shapes(model.graph.output),
        attributes={"model_files": {m: get_card(m).file for m in models}, **attributes},
        verification={"tensorrt_coverage": coverage.summary(), "tensorrt_ok": coverage.ok},
    )


def save_artefacts(out: Path, artefacts: list[Artefact]) -> Manifest:
    manifest = load_or_new(out)  # re-read: other stages may have written it meanwhile
    for artefact in artefacts:
        manifest.add(artefact)
    manifest.versions = runtime_versions()
    manifest.save(out)
    return manifest


def export_surrogates(cfg: ExportConfig, log: Log = print) -> list[Artefact]:
    """Each surrogate as ``surrogate_<name>.onnx`` (dynamic batch), verified against PyTorch."""
    artefacts = []
    for name in cfg.models:
        start = time.perf_counter()
        path = cfg.out / f"surrogate_{name}.onnx"
        model = export_surrogate(name, path, cfg.size)
        artefact = _artefact(cfg.out, path, "surrogate", (name,), model, size=cfg.size)
        if cfg.verify:
            artefact.verification.update(verify_surrogate(name, path, cfg.size))
        artefact.seconds = round(time.perf_counter() - start, 2)
        log(f"surrogate {name}: {path} ({artefact.seconds:.1f} s) {artefact.verification}")
        artefacts.append(artefact)
    save_artefacts(cfg.out, artefacts)
    return artefacts


def export_step_graph(cfg: ExportConfig, pgd: PGDConfig = PGDConfig(), log: Log = print) -> list[Artefact]:
    """The PGD step of the surrogate set ``cfg.models`` plus the resampling table its loop needs."""
    if pgd.bf16_surrogates:  # ONNX's Conv is typed float16/float/double: a bfloat16 surrogate is not a valid graph
        raise BadOptionError("bf16 surrogates run only in the AOT step (facecloak-export aot --bf16); "
                             "ONNX has no bfloat16 convolution, and TensorRT picks its precision at build (--precision)")
    spec = StepSpec(cfg.models, cfg.views, cfg.size, pgd, cfg.members)
    path = cfg.out / f"{spec.name}.onnx"
    start = time.perf_counter()
    timings = export_step(spec, path, cfg.opset)
    model = onnx.load(str(path))
    artefact = _artefact(cfg.out, path, "step", spec.models, model, views=spec.views, size=spec.size, members=spec.members,
                         pgd=spec.baked_pgd(), **{k: round(v, 2) for k, v in timings.items()})
    if cfg.verify:
        artefact.verification.update(verify_step(spec, path))
    artefact.seconds = round(time.perf_counter() - start, 2)
    log(f"step {spec.name}: {path} ({artefact.seconds:.1f} s) {artefact.verification}")
    table = export_resample_table(cfg)
    save_artefacts(cfg.out, [artefact, table])
    return [artefact, table]


def export_resample_table(cfg: ExportConfig) -> Artefact:
    """The diversity down/up-sampling matrices every step-graph loop looks up (one per frame size)."""
    path = cfg.out / f"resample_{cfg.size}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, resample_table(cfg.size))
    return Artefact(name=path.stem, kind="table", file=path.name, sha256=sha256_file(path),
                    attributes={"size": cfg.size, "what": "diversity down/up-sampling matrices, indexed by down size"})


def export_aot_step(cfg: ExportConfig, pgd: PGDConfig = PGDConfig(), log: Log = print) -> list[Artefact]:
    """The PGD step compiled by AOTInductor for this CPU (``aot-step``), plus the resampling table."""
    spec = StepSpec(cfg.models, cfg.views, cfg.size, pgd, cfg.members)
    path = cfg.out / f"{spec.name}.pt2"
    start = time.perf_counter()
    timings = compile_step_aot(spec, path)
    shapes = {name: list(t.shape) for name, t in zip(spec.input_names(), example_inputs(spec))}
    artefact = Artefact(
        name=f"{spec.name}_aot", kind="aot-step", file=path.relative_to(cfg.out).as_posix(), sha256=sha256_file(path),
        models={m: sha256_file(f) for m, f in model_hash_inputs(spec.models).items()}, inputs=shapes,
        outputs={name: [] for name in STEP_OUTPUTS},
        attributes={"model_files": {m: get_card(m).file for m in spec.models}, "views": spec.views, "size": spec.size,
                    "members": spec.members, "pgd": spec.baked_pgd(), "cpu": cpu_fingerprint(), **{k: round(v, 2) for k, v in timings.items()}},
    )
    artefact.seconds = round(time.perf_counter() - start, 2)
    log(f"aot step {spec.name}: {path} ({artefact.seconds:.1f} s)")
    table = export_resample_table(cfg)
    save_artefacts(cfg.out, [artefact, table])
    return [artefact, table]

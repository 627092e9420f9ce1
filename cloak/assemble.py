"""One place that builds an enroller: the view generator and the optimise backend chain, from one spec.

The CLI, the server and the benchmark all call ``build_enroller``. It sits above the core (it may open
``facecloak.engines`` runtimes), so no core module imports it. Every fallback leaves one line in
``AssembledEnroller.notes`` saying why, for logs and the server's Describe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from .anchors import AnchorGallery
from .assets import asset, cache_dir
from .backend_names import AUTO, BACKENDS, PYTORCH_BACKENDS
from .enroll import DEFAULT_SURROGATES, Enroller
from .errors import BadOptionError
from .faces import FaceDetector
from .models import get_card
from .optimise import PGDConfig
from .optimise.loop import DiversityDraw, StepInputs
from .optimise.backend import OptimiseBackend
from .views import AugmentViews, ViewGenerator
from .views.arc2face_select import choose_view_backend

log = logging.getLogger("facecloak.assemble")

Say = Callable[[str], None]
VIEW_BACKENDS = ("auto", "augment", "arc2face")


@dataclass(frozen=True)
class EnrollerSpec:
    backend: str = "torch-cpu"
    engine_dir: str | None = None  # facecloak-export output for the engine backends (default engines/build)
    # The default request shape the engine backend must serve (others fall back to torch-cpu).
    surrogates: tuple[str, ...] = DEFAULT_SURROGATES
    views: int = 8
    size: int = 112
    pgd: PGDConfig = field(default_factory=PGDConfig)
    members: int = 0  # the mask-set size of the default request (0: one mask; EnrollConfig.members K > 1: K)
    view_backend: str = "auto"  # auto: arc2face when its weights, extra and a GPU are present, else augment
    arc2face_dir: str | None = None  # default $FACECLOAK_ARC2FACE_DIR
    arc2face_export_dir: str | None = None  # sample Arc2Face with its exported ONNX graphs instead of PyTorch

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise BadOptionError(f"backend {self.backend!r} is not available; choose one of {', '.join(BACKENDS)}")
        if self.view_backend not in VIEW_BACKENDS:
            raise BadOptionError(f"view backend {self.view_backend!r} is unknown; choose one of {', '.join(VIEW_BACKENDS)}")


@dataclass
class AssembledEnroller:
    enroller: Enroller
    backend: str  # the runtime that serves the default request shape
    view_backend: str  # "arc2face" or "augment"
    notes: list[str] = field(default_factory=list)  # one line per fallback or choice, for logs and Describe


def build_views(spec: EnrollerSpec, detector: FaceDetector | None = None) -> tuple[ViewGenerator, str, str]:
    """The view generator, its name, and the one-line reason it was chosen."""
    if spec.view_backend == "augment":
        return AugmentViews(), "augment", "augment: asked for"
    choice = choose_view_backend(spec.arc2face_dir, allow_cpu=spec.view_backend == "arc2face")
    if choice.name != "arc2face":
        if spec.view_backend == "arc2face":
            raise BadOptionError(f"Arc2Face views were asked for but cannot run here: {choice.reason}")
        return AugmentViews(), "augment", choice.reason
    from .views.arc2face import Arc2FaceConfig, Arc2FaceViews  # noqa: PLC0415 - heavy, only when chosen

    config, sampler = Arc2FaceConfig(model_dir=choice.model_dir), None
    if spec.arc2face_export_dir is not None:
        from facecloak.engines.arc2face_runtime import OnnxArc2FaceSampler  # noqa: PLC0415

        sampler = OnnxArc2FaceSampler(Path(spec.arc2face_export_dir), choice.model_dir, config.sampler)
    return Arc2FaceViews(config, detector, sampler=sampler), "arc2face", choice.reason


def aot_folder(spec: EnrollerSpec) -> Path:
    """The user-cache folder of the AOT step for ``spec``'s request shape, keyed by everything that
    changes the compiled code: model file hashes, surrogate set, the step's inputs, views, size, PGD constants,
    versions, CPU."""
    import torch  # noqa: PLC0415

    from facecloak import __version__  # noqa: PLC0415
    from facecloak.engines.aot_runtime import cpu_fingerprint  # noqa: PLC0415
    from facecloak.engines.manifest import sha256_file  # noqa: PLC0415
    from facecloak.models.weights import DEAD_WEIGHT  # noqa: PLC0415

    key = {"models": {m: sha256_file(asset(get_card(m).file)) for m in spec.surrogates}, "order": list(spec.surrogates),
           "step_inputs": [f.name for f in fields(StepInputs) + fields(DiversityDraw)], "views": spec.views, "size": spec.size, "members": spec.members, "pgd": spec.pgd.baked(), "facecloak": __version__,
           "dead_weight": DEAD_WEIGHT,  # the package bakes in the weights as the loader prepares them
           "torch": torch.__version__, "cpu": cpu_fingerprint()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    set_part = f"_m{spec.members}" if spec.members else ""
    return cache_dir() / "aot" / f"{'-'.join(spec.surrogates)}_v{spec.views}_s{spec.size}{set_part}_{digest}"


def prepare_aot(spec: EnrollerSpec, say: Say) -> Path:
    """The AOT step for ``spec``, compiled into the user cache unless it is already there.

    Compiled into a private temporary folder and published with one rename, so two processes that
    race both end with the same complete folder (the loser's copy is discarded).
    """
    from facecloak.engines.manifest import MANIFEST_NAME  # noqa: PLC0415

    folder = aot_folder(spec)
    if (folder / MANIFEST_NAME).exists():
        return folder
    say(f"preparing the fast backend for {'+'.join(spec.surrogates)}, {spec.views} views (once; a few minutes)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.parent / f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        compile_aot(spec, scratch)
        try:
            os.rename(scratch, folder)
        except OSError:
            if not (folder / MANIFEST_NAME).exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def compile_aot(spec: EnrollerSpec, out: Path) -> None:
    """Compile the AOT step into ``out`` in a child process: tracing and compiling take several GB and
    minutes, which the enrolling (or serving) process should neither hold afterwards nor die of."""
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415
    from multiprocessing import get_context  # noqa: PLC0415

    from facecloak.export.pipeline import ExportConfig, export_aot_step, quiet, without_warnings  # noqa: PLC0415 - compiling is an export step

    config = ExportConfig(out=out, models=spec.surrogates, views=spec.views, size=spec.size, members=spec.members, verify=False)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=without_warnings) as child:
        child.submit(export_aot_step, config, spec.pgd, quiet).result()


def build_backend(spec: EnrollerSpec, say: Say = lambda _: None) -> tuple[OptimiseBackend, str, list[str]]:
    """The optimise backend chain: the configured runtime (and the less capable ones after it), with
    PyTorch eager as the fallback for shapes no exported step serves and for runtimes that cannot open."""
    from .optimise.torch_backend import TorchBackend  # noqa: PLC0415 - PyTorch is the fallback of every chain

    torch_backend = TorchBackend()
    if spec.backend == "torch-cpu":
        return torch_backend, "torch-cpu", []
    from facecloak.engines.graph_backend import open_graph_backend  # noqa: PLC0415 - engine runtimes only when asked for

    kind, engine_dir = ("aot-cpu", spec.engine_dir) if spec.backend == AUTO else (spec.backend, spec.engine_dir)
    try:
        if kind == "aot-cpu" and engine_dir is None:
            engine_dir = str(prepare_aot(spec, say))
        backend, refusals = open_graph_backend(kind, spec.surrogates, spec.views, spec.pgd, spec.size,
                                               engine_dir=engine_dir, fallback=torch_backend, members=spec.members)
    except Exception as exc:  # noqa: BLE001 - any failure to prepare or open (no C++ compiler, ...) falls back
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return torch_backend, "torch-cpu", [f"{kind} unavailable, using torch-cpu: {reason}"]
    return backend, backend.name, refusals


def build_enroller(spec: EnrollerSpec = EnrollerSpec(), detector: FaceDetector | None = None,
                   gallery: AnchorGallery | None = None, say: Say = lambda _: None) -> AssembledEnroller:
    """An ``Enroller`` with the views and backend ``spec`` asks for, falling back where they cannot run.

    ``say`` receives one-line notices meant for a waiting user (the one-time preparation).
    """
    spec.validate()
    detector = detector or FaceDetector()
    views, view_name, view_reason = build_views(spec, detector)
    backend, backend_name, notes = build_backend(spec, say)
    if spec.pgd.bf16_convolutions and backend_name not in PYTORCH_BACKENDS:  # asked for; only oneDNN reads the mode
        notes.append(f"bf16_convolutions not honoured: {backend_name} computes float32")
    for note in notes:
        log.warning("optimise backend fallback", extra={"reason": note})
    enroller = Enroller(detector=detector, views=views, gallery=gallery, backend=backend)
    return AssembledEnroller(enroller, backend_name, view_name, [view_reason, *notes])

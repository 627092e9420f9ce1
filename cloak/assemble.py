"""One place that builds an enroller: the view generator and the optimise backend chain, from one spec.

The CLI, the server and the benchmark all call ``build_enroller``. It sits above the core (it may open
``facecloak.engines`` runtimes), so no core module imports it. Every fallback leaves one line in
``AssembledEnroller.notes`` saying why, for logs and the server's Describe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .anchors import AnchorGallery
from .enroll import DEFAULT_SURROGATES, Enroller
from .errors import BadOptionError, FaceCloakError
from .faces import FaceDetector
from .optimise import PGDConfig
from .optimise.backend import OptimiseBackend
from .views import AugmentViews, ViewGenerator
from .views.arc2face_select import choose_view_backend

log = logging.getLogger("facecloak.assemble")

# "torch-cpu": PyTorch eager, the reference; the others run exported graphs from ``engine_dir``.
BACKENDS = ("torch-cpu", "ort-cpu", "ort-cuda", "tensorrt")
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

    sampler = None
    if spec.arc2face_export_dir is not None:
        from facecloak.engines.arc2face_runtime import OnnxArc2FaceSampler  # noqa: PLC0415

        sampler = OnnxArc2FaceSampler(Path(spec.arc2face_export_dir), choice.model_dir, Arc2FaceConfig(choice.model_dir).sampler)
    return Arc2FaceViews(Arc2FaceConfig(model_dir=choice.model_dir), detector, sampler=sampler), "arc2face", choice.reason


def build_backend(spec: EnrollerSpec) -> tuple[OptimiseBackend, str, list[str]]:
    """The optimise backend chain: the configured runtime (and the less capable ones after it), with
    PyTorch eager as the fallback for shapes no exported step graph serves."""
    from .optimise.torch_backend import TorchBackend  # noqa: PLC0415 - PyTorch is the fallback of every chain

    torch_backend = TorchBackend()
    if spec.backend == "torch-cpu":
        return torch_backend, "torch-cpu", []
    from facecloak.engines.graph_backend import open_graph_backend  # noqa: PLC0415 - engine runtimes only when asked for

    try:
        backend, refusals = open_graph_backend(spec.backend, spec.surrogates, spec.views, spec.pgd, spec.size,
                                               engine_dir=spec.engine_dir, fallback=torch_backend)
    except FaceCloakError as exc:
        return torch_backend, "torch-cpu", [f"no engine runtime could be opened; using torch-cpu: {exc}"]
    return backend, backend.name, refusals


def build_enroller(spec: EnrollerSpec = EnrollerSpec(), detector: FaceDetector | None = None,
                   gallery: AnchorGallery | None = None) -> AssembledEnroller:
    """An ``Enroller`` with the views and backend ``spec`` asks for, falling back where they cannot run."""
    spec.validate()
    detector = detector or FaceDetector()
    views, view_name, view_reason = build_views(spec, detector)
    backend, backend_name, notes = build_backend(spec)
    for note in notes:
        log.warning("optimise backend fallback", extra={"reason": note})
    enroller = Enroller(detector=detector, views=views, gallery=gallery, backend=backend)
    return AssembledEnroller(enroller, backend_name, view_name, [view_reason, *notes])

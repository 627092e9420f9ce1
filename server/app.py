"""Assembling and running the server: warm-up, gRPC (TLS/mTLS), health, reflection, metrics, shutdown."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__
from ..assets import asset
from ..assemble import EnrollerSpec, build_enroller
from ..enroll import EnrollConfig, Enroller
from ..imageio import ImageLimits
from ..optimise.precision import precision_note
from ..models import get_card, torch_embedder
from ..proto import enrollment_pb2 as pb
from ..proto.convert import OptionLimits
from .auth import ApiKeyAuth, RateLimiter, load_api_keys
from .config import ServerConfig
from .metrics import Metrics
from .pool import EnrollPool
from .service import SERVICE_NAME, EnrollmentServicer, Readiness

log = logging.getLogger("facecloak.server")
API_VERSION = "facecloak.v1"
_STOP_SECONDS = 30.0  # after the grace period: how long stopped jobs may take to reach their next iteration
_SEND_SECONDS = 2.0  # then: how long handlers get to send the status of a stopped job


def default_warmup(enroller: Enroller, models: tuple[str, ...]) -> None:
    """Load everything the first request would otherwise wait for: gallery (built and cached on first use),
    the differentiable surrogates, the detector."""
    enroller.gallery(models)
    for name in models:
        torch_embedder(name)
    enroller.detector.detect(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy())


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    key, cert = Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes()
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    out = {"facecloak": __version__, "torch": torch.__version__}
    for dist in ("grpcio", "protobuf", "onnxruntime", "opencv-python-headless"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class FaceCloakServer:
    """One enrollment server. ``start`` binds and returns the port at once; models warm up in the background
    (Enroll answers MODELS_NOT_READY and health says NOT_SERVING until then)."""

    def __init__(self, config: ServerConfig, enroller: Enroller | None = None,
                 warmup: Callable[[Enroller, tuple[str, ...]], None] = default_warmup) -> None:
        config.validate()
        self.config = config
        self.metrics = Metrics()
        self.readiness = Readiness()
        self._ready_event = threading.Event()
        self._enroller = enroller
        self._warmup = warmup
        self._manifest: list[pb.ModelInfo] = []
        self.active_backend = config.backend  # what actually serves, known after warm-up (fallbacks)
        self.view_generator = "augment"
        self.notes: list[str] = []  # why these views and this backend (choices, fallbacks): for Describe
        base = EnrollConfig()
        self.defaults = replace(base, surrogates=tuple(m for m in base.surrogates if m in config.models) or config.models,
                                pgd=replace(base.pgd, bf16_surrogates=config.bf16_surrogates,
                                            bf16_convolutions=config.bf16_convolutions))
        self.limits = OptionLimits(config.models, config.max_views, config.max_check_views, config.max_iterations,
                                   config.max_masks)
        self.pool = EnrollPool(None, config.workers, config.queue_depth, self.metrics,  # enroller set by warm-up
                               pixel_budget=config.max_queued_pixels)
        self.auth = ApiKeyAuth(load_api_keys(config.api_keys, config.api_keys_file))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._grpc: grpc.Server | None = None
        self._metrics_http = None
        self.port: int | None = None
        self.metrics_port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> int:
        cfg = self.config
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        servicer = EnrollmentServicer(
            self.pool, self.auth, RateLimiter(cfg.rate_limit_per_minute, cfg.rate_limit_burst), self.metrics,
            self.defaults, self.limits, ImageLimits(cfg.max_image_bytes, cfg.max_image_pixels), self.readiness,
            self.describe,
        )
        slots = cfg.workers + cfg.queue_depth
        server = grpc.server(
            # Every admitted Enroll holds a thread for its whole life; the rest answer quick rejections.
            ThreadPoolExecutor(max_workers=slots + 16, thread_name_prefix="rpc"),
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
            maximum_concurrent_rpcs=4 * slots + 64,  # bounds memory held by pending uploads
        )
        server.add_generic_rpc_handlers((servicer.handlers(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
        self.port = server.add_secure_port(address, server_credentials(cfg)) if cfg.tls else server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot listen on {address}")
        server.start()
        self._grpc = server
        if cfg.metrics_port is not None:
            self._metrics_http, self.metrics_port = self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
        threading.Thread(target=self._warm, name="warmup", daemon=True).start()
        log.info("listening", extra={"port": self.port, "models": list(cfg.models)})
        return self.port

    def _open_enroller(self) -> Enroller:
        """The enroller with the configured optimise backend chain and the view backend that can run here."""
        spec = EnrollerSpec(backend=self.config.backend, engine_dir=self.config.engine_dir,
                            surrogates=self.defaults.surrogates, views=self.defaults.views, pgd=self.defaults.pgd)
        assembled = build_enroller(spec)
        self.view_generator, self.active_backend = assembled.view_backend, assembled.backend
        view_reason, *fallbacks = assembled.notes
        self.notes = [view_reason, precision_note(self.defaults.pgd, self.active_backend), *fallbacks]
        log.info("view backend", extra={"choice": view_reason})
        return assembled.enroller

    def _warm(self) -> None:
        try:
            enroller = self._enroller or self._open_enroller()
            self._warmup(enroller, self.config.models)
            self._manifest = self._model_manifest()
        except Exception as exc:  # noqa: BLE001 - reported through health, Describe and MODELS_NOT_READY
            self.readiness.problem = f"start-up failed: {exc}"
            log.exception("warm-up failed")
            return
        self.pool.enroller = enroller
        self.readiness.ready = True
        self.metrics.ready.set(1)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._ready_event.set()
        log.info("ready")

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready_event.wait(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Graceful: refuse new enrollments, let in-flight ones finish for ``grace`` s, then stop the rest
        with SHUTTING_DOWN. gRPC keeps serving meanwhile, so health answers NOT_SERVING during the drain
        (not "connection refused") and every caller gets a documented status, not gRPC's bare one."""
        grace = self.config.grace_seconds if grace is None else grace
        self.readiness.ready, self.readiness.draining = False, True
        self.readiness.problem = "the server is shutting down"
        self.health.enter_graceful_shutdown()
        self.metrics.ready.set(0)
        self.pool.close(wait=False)  # new admissions: SHUTTING_DOWN; the workers finish the queue
        if not self.pool.wait_idle(grace):
            self.pool.stop_all("SHUTTING_DOWN")  # each stops at its next PGD iteration
            self.pool.wait_idle(_STOP_SECONDS)
        self.readiness.closing = True
        if self._grpc is not None:
            # Handlers relaying a final status need a moment to send it; anything else is ended now.
            self._grpc.stop(_SEND_SECONDS).wait()
        self.pool.close(wait=True)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        log.info("stopped")

    def wait_for_termination(self) -> None:
        if self._grpc is not None:
            self._grpc.wait_for_termination()

    # -- Describe --------------------------------------------------------------------------------------------
    def _model_manifest(self) -> list[pb.ModelInfo]:
        out = []
        for name in self.config.models:
            card = get_card(name)
            out.append(pb.ModelInfo(name=name, input_size=card.input_size, embedding_dim=card.embedding_dim,
                                    match_threshold=card.match_threshold, file=card.file,
                                    sha256=_sha256(asset(card.file)), backend=self.active_backend))
        return out

    def describe(self) -> pb.DescribeResponse:
        cfg, d = self.config, self.defaults
        return pb.DescribeResponse(
            server_version=__version__, api_version=API_VERSION, ready=self.readiness.ready, backend=self.active_backend,
            view_generator=self.view_generator, models=self._manifest, auth_required=self.auth.enabled, versions=_versions(),
            notes=self.notes,
            limits=pb.Limits(
                max_image_bytes=cfg.max_image_bytes, max_image_pixels=cfg.max_image_pixels,
                max_message_bytes=cfg.max_message_bytes, max_views=cfg.max_views, max_check_views=cfg.max_check_views,
                max_iterations=cfg.max_iterations, max_masks=cfg.max_masks, workers=cfg.workers,
                queue_depth=cfg.queue_depth, rate_limit_per_minute=cfg.rate_limit_per_minute,
                max_queued_pixels=cfg.max_queued_pixels),
            defaults=pb.EnrollDefaults(
                eps=d.budget.eps * 255, eps_focus=d.budget.eps_focus * 255, iterations=d.pgd.iterations, views=d.views,
                check_views=d.check_views, surrogates=list(d.surrogates), seed=d.seed),
        )

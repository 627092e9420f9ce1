"""The facecloak.v1.EnrollmentService implementation (Enroll, Describe) on a synchronous gRPC server."""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from .. import __version__
from ..apply import Quality
from ..enroll import EnrollConfig, EnrollResult
from ..imageio import ImageLimits, decode_image, probe_image
from ..mask import encode_mask_set
from ..proto import enrollment_pb2 as pb
from ..proto.convert import OptionLimits, configs_from_options
from .auth import ApiKeyAuth, RateLimiter
from .errors import REQUEST_ID_KEY, ServiceError, abort
from .metrics import Metrics
from .pool import EnrollPool, Job, JobOutcome, ProgressEvent, stopped_error

log = logging.getLogger("facecloak.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EnrollmentService"].full_name
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_POLL_SECONDS = 0.5
# The client's deadline timer fires first and its cancel can reach us shortly before our own copy of the
# deadline runs out (grpc-timeout is rounded up and counted from the headers' arrival): a cancel this
# close to the deadline is the deadline.
_DEADLINE_SLACK_SECONDS = 0.5


class Malformed:
    """Stands in for a request whose bytes are not a valid protobuf message."""


def safe_parser(message_type):
    """A request deserialiser that never raises, so malformed input gets MALFORMED_REQUEST, not INTERNAL."""

    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except (DecodeError, RecursionError, ValueError):
            return Malformed()

    return parse


@dataclass
class Readiness:
    ready: bool = False
    problem: str = "the models are still loading"
    draining: bool = False  # shutting down: new Enroll calls get SHUTTING_DOWN, in-flight ones may finish
    closing: bool = False  # the drain is over: a call that ends now was ended by the shutdown


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id if it is a sane token, else a fresh one."""
    given = next((v for k, v in context.invocation_metadata() if k == REQUEST_ID_KEY), "")
    return given if isinstance(given, str) and _REQUEST_ID.match(given) else uuid.uuid4().hex


def peer_host(peer: str) -> str:
    """"ipv4:10.0.0.1:53211" -> "ipv4:10.0.0.1": rate limits follow the host, not one connection's port."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


def _progress(stage: str, fraction: float, index: int = 0, ahead: int = 0) -> pb.EnrollResponse:
    return pb.EnrollResponse(progress=pb.Progress(stage=stage, fraction=fraction, mask_index=index, queue_position=ahead))


def visibility_message(quality: Quality | None) -> pb.Visibility | None:
    """The self-check's visibility figures; a face metric that could not be taken (box off the photo) is NaN."""
    if quality is None:
        return None
    face = (quality.face_ssim, quality.flip_mean, quality.flip_p99, quality.flip_visible)
    face_ssim, flip_mean, flip_p99, flip_visible = (float("nan") if v is None else v for v in face)
    return pb.Visibility(ssim=quality.ssim, psnr=quality.psnr, face_ssim=face_ssim, flip_mean=flip_mean,
                         flip_p99=flip_p99, flip_visible=flip_visible)


def result_message(outcome: JobOutcome, request_id: str) -> pb.EnrollResponse:
    first: EnrollResult = outcome.results[0]
    face = first.face
    detected = pb.DetectedFace(
        x=face.box[0], y=face.box[1], width=face.box[2], height=face.box[3], score=face.score,
        landmarks=[pb.Point(x=float(x), y=float(y)) for x, y in face.landmarks],
    )
    masks = [
        pb.MaskResult(
            fcmask=encode_mask_set(r.masks), seed=seed,
            self_check=[pb.SelfCheck(model=c.model, similarity_before=c.before, similarity_after=c.after,
                                     match_threshold=c.threshold) for c in r.self_check],
            timings=[pb.StageTiming(stage=k, seconds=v) for k, v in r.timings.items()],
            visibility=visibility_message(r.visibility),
        )
        for r, seed in zip(outcome.results, outcome.seeds)
    ]
    return pb.EnrollResponse(result=pb.EnrollResult(masks=masks, face=detected, request_id=request_id,
                                                    queue_seconds=outcome.queue_seconds))


class EnrollmentServicer:
    def __init__(self, pool: EnrollPool, auth: ApiKeyAuth, limiter: RateLimiter, metrics: Metrics,
                 defaults: EnrollConfig, limits: OptionLimits, image_limits: ImageLimits, readiness: Readiness,
                 describe: Callable[[], pb.DescribeResponse]) -> None:
        self.pool = pool
        self.auth = auth
        self.limiter = limiter
        self.metrics = metrics
        self.defaults = defaults
        self.limits = limits
        self.image_limits = image_limits
        self.readiness = readiness
        self._describe = describe
        # One full-size decode at a time: its transient (Pillow's 4-byte pixels plus our RGB copy, ~2.3x the
        # photo) would otherwise multiply with concurrent large uploads. Decoding is short beside enrollment.
        self._decoding = threading.Lock()

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Enroll": grpc.unary_stream_rpc_method_handler(
                self.Enroll, request_deserializer=safe_parser(pb.EnrollRequest),
                response_serializer=pb.EnrollResponse.SerializeToString),
            "Describe": grpc.unary_unary_rpc_method_handler(
                self.Describe, request_deserializer=safe_parser(pb.DescribeRequest),
                response_serializer=pb.DescribeResponse.SerializeToString),
        })

    def _finish(self, method: str, request_id: str, start: float, error: ServiceError | None,
                once: threading.Lock | None = None, **fields) -> None:
        """Count and log one finished RPC; with ``once``, only the first caller holding that lock does."""
        if once is not None and not once.acquire(blocking=False):
            return
        code = error.code.name if error else "OK"
        self.metrics.requests.labels(method, code).inc()
        if error:
            self.metrics.errors.labels(error.reason).inc()
        level = logging.ERROR if error and error.reason == "INTERNAL" else logging.INFO
        log.log(level, "rpc finished", extra={"request_id": request_id, "method": method, "code": code,
                                              "reason": error.reason if error else None,
                                              "duration_ms": round((time.monotonic() - start) * 1000, 1), **fields})

    def _authenticate(self, request, context: grpc.ServicerContext) -> str | None:
        if isinstance(request, Malformed):
            raise ServiceError("MALFORMED_REQUEST", "the request is not a valid facecloak.v1 message")
        return self.auth.authenticate(context.invocation_metadata())

    def Describe(self, request, context: grpc.ServicerContext) -> pb.DescribeResponse:
        request_id, start = request_id_of(context), time.monotonic()
        try:
            self._authenticate(request, context)
        except ServiceError as err:
            self._finish("Describe", request_id, start, err)
            abort(context, err, request_id)
        self._finish("Describe", request_id, start, None)
        return self._describe()

    def Enroll(self, request, context: grpc.ServicerContext) -> Iterator[pb.EnrollResponse]:
        request_id, start = request_id_of(context), time.monotonic()
        context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        key_id, job, error = None, None, None
        # Recorded once: by this generator, or by gRPC's termination callback when the client went away
        # (gRPC may never resume or close the generator of a dead call).
        once = threading.Lock()

        def record(error: ServiceError | None, **fields) -> None:
            self._finish("Enroll", request_id, start, error, once=once, key_id=key_id, **fields)

        def end_early(stopping: Job, reason: str) -> None:
            stopping.stop(reason)
            record(stopped_error(reason))

        try:
            key_id = self._authenticate(request, context)
            if self.readiness.draining:
                raise ServiceError("SHUTTING_DOWN", "the server is shutting down; retry on another instance")
            if not self.readiness.ready:
                raise ServiceError("MODELS_NOT_READY", f"not ready: {self.readiness.problem}")
            self.limiter.acquire(key_id or peer_host(context.peer()))
            configs = configs_from_options(request.options, self.defaults, self.limits)
            job = self._admit(request, configs, request_id, context, end_early)
            yield _progress("queued", 0.0, ahead=job.ahead)
            outcome = yield from self._follow(job, context)
            response = result_message(outcome, request_id)
            del outcome  # the masks now live only in the response
        except GeneratorExit:  # gRPC dropped the stream: the client went away while we were sending
            if job is not None:
                end_early(job, self._early_end_reason(context))
            raise
        except ServiceError as err:
            error = err
        except Exception as exc:  # core errors raised before the job started (e.g. BadOptionError)
            error = ServiceError.from_exception(exc)
            if error.reason == "INTERNAL":
                log.exception("Enroll failed", extra={"request_id": request_id})
        if error is not None:
            record(error)
            abort(context, error, request_id)
        self.metrics.enroll_seconds.observe(time.monotonic() - start)
        record(None, masks=len(response.result.masks), queue_ms=round(response.result.queue_seconds * 1000, 1))
        yield response

    def _admit(self, request: pb.EnrollRequest, configs: list[EnrollConfig], request_id: str,
               context: grpc.ServicerContext, end_early: Callable[[Job, str], None]) -> Job:
        """Admit by the photo's decoded size (read from its header), decode it, drop the upload bytes,
        hand the job to a worker.

        ``end_early(job, reason)`` runs if the call ends (cancel, deadline) while the job may still run.
        """
        width, height = probe_image(request.image, self.image_limits)
        ticket = self.pool.reserve(width * height)
        try:
            with self._decoding:
                photo = decode_image(request.image, self.image_limits)
            request.ClearField("image")  # the compressed upload is not needed any more
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            job = Job(request_id, configs, photo, deadline=deadline, ticket=ticket)
            del photo

            def ended() -> None:
                end_early(job, self._early_end_reason(context))

            if not context.add_callback(ended):
                ended()  # the call already ended: gRPC will never run the callback
            self.pool.submit(job)
        except BaseException:
            self.pool.release(ticket)
            raise
        return job

    def _follow(self, job: Job, context: grpc.ServicerContext):
        """Relay the job's progress events; return its outcome or raise its error."""
        while True:
            try:
                event = job.events.get(timeout=_POLL_SECONDS)
            except queue.Empty:  # nothing yet (queued, or a long stage): keep waiting
                continue
            if isinstance(event, ProgressEvent):
                yield _progress(event.stage, event.fraction, event.mask_index)
            elif isinstance(event, JobOutcome):
                return event
            else:
                raise event

    def _early_end_reason(self, context: grpc.ServicerContext) -> str:
        """Why a call ended before its handler did: SHUTTING_DOWN once the drain is over, else by its deadline."""
        return "SHUTTING_DOWN" if self.readiness.closing else _early_end_reason(context)


def _early_end_reason(context: grpc.ServicerContext) -> str:
    """Why a call ended before its handler did: DEADLINE_EXCEEDED near the deadline, else CANCELLED."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS else "CANCELLED"

"""Readiness, the bounded queue, cancellation, deadlines, graceful shutdown and internal errors."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facecloak.enroll import Enroller
from facecloak.errors import AssetMissingError
from facecloak.optimise import PGDConfig
from facecloak.server.app import default_warmup
from facecloak.server.errors import ServiceError
from facecloak.server.service import _early_end_reason
from .test_server_helpers import LONG, TINY, client_for, lfw_bytes, options, remote_error, running_server, wait_until

PHOTO = lfw_bytes("Tony_Blair", 1)


def health_status(server) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service="facecloak.v1.EnrollmentService"), timeout=5).status


def health_down(server) -> bool:
    """During a drain the health service reports NOT_SERVING (or the port already refuses new calls)."""
    try:
        return health_status(server) == health_pb2.HealthCheckResponse.NOT_SERVING
    except grpc.RpcError as err:
        return err.code() == grpc.StatusCode.UNAVAILABLE


def cancelled(server) -> float:
    return server.metrics.value("facecloak_errors_total", {"reason": "CANCELLED"})


def first_event(call, stage: str):
    """Read the stream until a progress event of ``stage`` arrives."""
    for response in call:
        if response.progress.stage == stage:
            return response
    raise AssertionError(f"stream ended before stage {stage}")


def test_unavailable_until_models_are_warm():
    gate = threading.Event()

    def slow_warmup(enroller, models):
        assert gate.wait(60)
        default_warmup(enroller, models)

    with running_server(wait=False, warmup=slow_warmup) as server, client_for(server) as client:
        err = remote_error(client.enroll, PHOTO, options())
        assert (err.reason, err.code) == ("MODELS_NOT_READY", grpc.StatusCode.UNAVAILABLE)
        assert health_status(server) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert client.describe().ready is False
        gate.set()
        assert server.wait_ready(120)
        assert health_status(server) == health_pb2.HealthCheckResponse.SERVING
        assert client.describe().ready and server.metrics.value("facecloak_ready") == 1


def test_failed_warmup_is_reported_not_hidden():
    def broken(enroller, models):
        raise AssetMissingError("asset not found: models/sface_112.onnx")

    with running_server(wait=False, warmup=broken) as server, client_for(server) as client:
        wait_until(lambda: "start-up failed" in server.readiness.problem, what="warm-up failure")
        err = remote_error(client.enroll, PHOTO, options())
        assert err.reason == "MODELS_NOT_READY" and "sface_112.onnx" in str(err)
        assert health_status(server) == health_pb2.HealthCheckResponse.NOT_SERVING


def test_full_queue_answers_at_once_and_cancelled_calls_free_their_slots():
    with running_server(workers=1, queue_depth=1) as server, client_for(server) as client:
        running = client.start_enroll(PHOTO, options(LONG))
        first_event(running, "detect")
        waiting = client.start_enroll(PHOTO, options(LONG))
        assert first_event(waiting, "queued").progress.queue_position == 0 and server.pool.admitted == 2
        start = time.monotonic()
        err = remote_error(client.enroll, PHOTO, options())
        assert (err.reason, err.code) == ("QUEUE_FULL", grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert time.monotonic() - start < 5.0 and err.details["queue_depth"] == "1"
        running.cancel()
        waiting.cancel()
        wait_until(lambda: server.pool.admitted == 0, what="both jobs to stop")
        wait_until(lambda: cancelled(server) == 2, what="both cancellations to be counted")
        assert client.enroll(PHOTO, options()).masks  # the worker is free again


def test_cancellation_stops_the_work_between_iterations():
    with running_server() as server, client_for(server) as client:
        call = client.start_enroll(PHOTO, options(LONG))
        first_event(call, "optimise")
        call.cancel()
        wait_until(lambda: server.pool.running == 0, timeout=15, what="the worker to stop")
        assert server.metrics.value("facecloak_enrollments_running") == 0
        wait_until(lambda: cancelled(server) == 1, what="the cancellation to be counted")


def test_deadline_stops_the_work():
    with running_server() as server, client_for(server) as client:
        start = time.monotonic()
        err = remote_error(client.enroll, PHOTO, options(LONG), timeout=2.0)
        assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - start < 10
        wait_until(lambda: server.pool.running == 0, timeout=15, what="the worker to stop")
        wait_until(lambda: server.metrics.value("facecloak_errors_total", {"reason": "DEADLINE_EXCEEDED"}) == 1,
                   what="the deadline to be counted")
        time.sleep(1.0)  # the worker's own error event arrives after the call ended: it must not count again
        assert server.metrics.value("facecloak_requests_total", {"method": "Enroll", "code": "DEADLINE_EXCEEDED"}) == 1
        assert cancelled(server) == 0


@pytest.mark.parametrize("remaining, reason", [(None, "CANCELLED"), (30.0, "CANCELLED"), (0.2, "DEADLINE_EXCEEDED"),
                                               (-0.1, "DEADLINE_EXCEEDED")])
def test_a_cancel_at_the_deadline_counts_as_the_deadline(remaining, reason):
    class EndedCall:  # just the one ServicerContext method the decision reads
        def time_remaining(self):
            return remaining

    # the client's deadline timer fires first, and its cancel reaches us a moment before our copy expires
    assert _early_end_reason(EndedCall()) == reason


class PausingEnroller(Enroller):
    """A real enroller that pauses at the first PGD iteration until the test lets it go on."""

    def __init__(self) -> None:
        super().__init__()
        self.paused, self.resume = threading.Event(), threading.Event()

    def enroll(self, photo, config, progress=None):
        def hook(stage, fraction):
            if stage == "optimise" and not self.paused.is_set():
                self.paused.set()
                assert self.resume.wait(60)
            progress(stage, fraction)

        return super().enroll(photo, config, progress=hook)


def test_graceful_shutdown_drains_in_flight_work():
    enroller = PausingEnroller()
    with running_server(enroller=enroller) as server, client_for(server) as client:
        call = client.start_enroll(PHOTO, options(replace(TINY, pgd=PGDConfig(iterations=2))))
        assert enroller.paused.wait(60)
        stopper = threading.Thread(target=server.stop, args=(120,))
        stopper.start()
        wait_until(lambda: not server.readiness.ready, what="shutdown to begin")
        assert server.pool.running == 1 and health_down(server)
        enroller.resume.set()
        result = [r for r in call if r.HasField("result")]
        assert len(result) == 1 and result[0].result.masks[0].fcmask.startswith(b"FCMK")
        stopper.join(60)
        assert not stopper.is_alive()
        assert remote_error(client.enroll, PHOTO, options(), timeout=5).code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(ServiceError, match="shutting down"):
            server.pool.reserve()


def test_shutdown_grace_expiry_cancels_long_work():
    with running_server() as server, client_for(server) as client:
        call = client.start_enroll(PHOTO, options(LONG))
        first_event(call, "optimise")
        start = time.monotonic()
        server.stop(0.5)
        assert time.monotonic() - start < 30  # the worker stopped at its next iteration, not after 100
        with pytest.raises(grpc.RpcError):
            list(call)


class BrokenEnroller(Enroller):
    def enroll(self, photo, config, progress=None):
        raise RuntimeError("leaky internal detail")


def test_unexpected_failure_is_internal_generic_and_logged_with_request_id(caplog):
    with running_server(enroller=BrokenEnroller()) as server, client_for(server) as client:
        with caplog.at_level(logging.ERROR, logger="facecloak.server"):
            err = remote_error(client.enroll, PHOTO, options())
    assert (err.reason, err.code) == ("INTERNAL", grpc.StatusCode.INTERNAL)
    assert "leaky" not in str(err) and err.request_id
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == err.request_id]
    assert logged and any(r.exc_info for r in logged)

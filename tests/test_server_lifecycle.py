"""Readiness, the bounded queue, cancellation, deadlines, graceful shutdown and internal errors."""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from facecloak.enroll import Enroller
from facecloak.errors import AssetMissingError
from facecloak.optimise import PGDConfig
from facecloak.server.app import default_warmup
from facecloak.server.errors import REASON_KEY, ServiceError
from facecloak.server.service import _early_end_reason
from .test_server_helpers import (LONG, TINY, client_for, lfw_bytes, lfw_path, options, remote_error, running_server,
                                  wait_until)

PHOTO = lfw_bytes("Tony_Blair", 1)


def health_status(server) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service="facecloak.v1.EnrollmentService"), timeout=5).status


class WatchedEnroller(Enroller):
    """A real enroller that records when its worker finishes each PGD iteration (the worker's own view, not
    the RPC's), and with ``pause`` holds the worker at its first iteration until the test lets it go on."""

    def __init__(self, pause: bool = False) -> None:
        super().__init__()
        self.iterations: list[float] = []  # time.monotonic() of each finished iteration
        self.paused, self.resume = threading.Event(), threading.Event()
        if not pause:
            self.resume.set()

    def enroll(self, photo, config, progress=None):
        def hook(stage, fraction):
            if stage == "optimise":
                self.iterations.append(time.monotonic())
                if not self.paused.is_set():
                    self.paused.set()
                    assert self.resume.wait(60)
            progress(stage, fraction)  # the pool's check: raises once the job is stopped

        return super().enroll(photo, config, progress=hook)

    def after(self, moment: float) -> int:
        return sum(t > moment for t in self.iterations)


def cancelled(server) -> float:
    return server.metrics.value("facecloak_errors_total", {"reason": "CANCELLED"})


def stream_error(call) -> tuple[grpc.StatusCode, str | None]:
    """The status code and facecloak reason a raw Enroll stream ends with."""
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    return info.value.code(), dict(info.value.trailing_metadata() or ()).get(REASON_KEY)


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


def test_cancel_or_deadline_of_a_waiting_call_frees_its_slot_at_once():
    """workers 1, queue depth 2: the worker is held; a waiting call that is cancelled, or whose deadline
    passes, gives its slot back now, not when the worker would reach it."""
    enroller = WatchedEnroller(pause=True)
    with running_server(enroller=enroller, workers=1, queue_depth=2) as server, client_for(server) as client:
        running = client.start_enroll(PHOTO, options(TINY))
        assert enroller.paused.wait(60)
        waiting = client.start_enroll(PHOTO, options(TINY))
        first_event(waiting, "queued")
        expiring = client.start_enroll(PHOTO, options(TINY), timeout=5.0)
        first_event(expiring, "queued")
        assert remote_error(client.enroll, PHOTO, options()).reason == "QUEUE_FULL"
        waiting.cancel()
        # (<= 2: on a slow machine the expiring call may already be gone too)
        wait_until(lambda: server.pool.admitted <= 2, timeout=5, what="the cancelled call's slot")
        replacement = client.start_enroll(PHOTO, options(TINY))
        first_event(replacement, "queued")
        assert stream_error(expiring)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: server.pool.admitted == 2, timeout=5, what="the expired call's slot")
        late = client.start_enroll(PHOTO, options(TINY))
        assert first_event(late, "queued").progress.queue_position == 1
        assert server.pool.running == 1 and len(enroller.iterations) == 1  # the worker never moved
        enroller.resume.set()
        for call in (running, replacement, late):
            assert [r for r in call if r.HasField("result")]
        wait_until(lambda: server.pool.admitted == 0 and server.pool.pixels == 0, what="every slot and pixel back")
        assert cancelled(server) == 1
        assert server.metrics.value("facecloak_errors_total", {"reason": "DEADLINE_EXCEEDED"}) == 1


def jpeg_of_size(width: int, height: int) -> bytes:
    """A real face scaled to ``width`` x ``height`` (a few hundred KB, many decoded pixels)."""
    buf = io.BytesIO()
    Image.open(lfw_path("Tony_Blair", 1)).resize((width, height)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def test_admission_counts_decoded_pixels_not_only_bytes():
    """The photos the queue holds are bounded by their decoded size, read from the header before decoding."""
    enroller = WatchedEnroller(pause=True)
    with running_server(enroller=enroller, workers=1, queue_depth=4, max_image_pixels=1_000_000,
                        max_queued_pixels=1_500_000) as server, client_for(server) as client:
        big = jpeg_of_size(1000, 1000)
        running = client.start_enroll(big, options(TINY))
        assert enroller.paused.wait(60) and server.pool.pixels == 1_000_000
        err = remote_error(client.enroll, jpeg_of_size(900, 900), options())  # 1.81 M > 1.5 M: refused, slots free
        assert (err.reason, err.details) == ("QUEUE_FULL", {"pixel_budget": "1500000"})
        small = client.start_enroll(jpeg_of_size(500, 500), options(TINY))
        assert first_event(small, "queued") and server.pool.pixels == 1_250_000
        enroller.resume.set()
        for call in (running, small):
            assert [r for r in call if r.HasField("result")]
        wait_until(lambda: server.pool.pixels == 0 and server.pool.admitted == 0, what="the pixels to be given back")


def test_cancellation_stops_the_work_at_the_next_iteration():
    enroller = WatchedEnroller()
    with running_server(enroller=enroller) as server, client_for(server) as client:
        call = client.start_enroll(PHOTO, options(LONG))
        first_event(call, "optimise")
        first_event(call, "optimise")
        cancelled_at = time.monotonic()
        call.cancel()
        wait_until(lambda: server.pool.running == 0, timeout=15, what="the worker to stop")
        assert enroller.after(cancelled_at) <= 2, f"{enroller.after(cancelled_at)} iterations ran after the cancel"
        assert len(enroller.iterations) < LONG.pgd.iterations
        assert server.metrics.value("facecloak_enrollments_running") == 0
        wait_until(lambda: cancelled(server) == 1, what="the cancellation to be counted")


def test_deadline_stops_the_work_at_the_next_iteration():
    enroller = WatchedEnroller()
    with running_server(enroller=enroller) as server, client_for(server) as client:
        start = time.monotonic()
        err = remote_error(client.enroll, PHOTO, options(LONG), timeout=3.0)
        assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - start < 10
        wait_until(lambda: server.pool.running == 0, timeout=15, what="the worker to stop")
        # The server's copy of the deadline starts when the headers arrive: a few ms after ours. (On a very
        # slow machine it may pass before PGD begins: then no iteration at all may follow it.)
        late = enroller.after(start + 3.0 + 0.05)
        assert late <= 2, f"{late} iterations ran after the deadline"
        assert len(enroller.iterations) < LONG.pgd.iterations
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


def test_graceful_shutdown_drains_in_flight_work():
    enroller = WatchedEnroller(pause=True)
    with running_server(enroller=enroller) as server, client_for(server) as client:
        call = client.start_enroll(PHOTO, options(replace(TINY, pgd=PGDConfig(iterations=2))))
        assert enroller.paused.wait(60)
        stopper = threading.Thread(target=server.stop, args=(120,))
        stopper.start()
        wait_until(lambda: not server.readiness.ready, what="shutdown to begin")
        # Draining: the port still answers; health says NOT_SERVING, new work gets SHUTTING_DOWN.
        assert server.pool.running == 1
        assert health_status(server) == health_pb2.HealthCheckResponse.NOT_SERVING
        refused = remote_error(client.enroll, PHOTO, options(), timeout=5)
        assert (refused.reason, refused.code) == ("SHUTTING_DOWN", grpc.StatusCode.UNAVAILABLE)
        enroller.resume.set()
        result = [r for r in call if r.HasField("result")]
        assert len(result) == 1 and result[0].result.masks[0].fcmask.startswith(b"FCMK")
        stopper.join(60)
        assert not stopper.is_alive()
        assert remote_error(client.enroll, PHOTO, options(), timeout=5).code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(ServiceError, match="shutting down"):
            server.pool.reserve()


def test_shutdown_grace_expiry_stops_long_work_with_a_documented_status(caplog):
    enroller = WatchedEnroller()
    with running_server(enroller=enroller) as server, client_for(server) as client:
        running = client.start_enroll(PHOTO, options(LONG))
        first_event(running, "optimise")
        waiting = client.start_enroll(PHOTO, options(LONG))
        first_event(waiting, "queued")
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="facecloak.server"):
            server.stop(0.5)
        assert time.monotonic() - start < 30
        assert len(enroller.iterations) < LONG.pgd.iterations  # the worker stopped at its next iteration
        for call in (running, waiting):
            assert stream_error(call) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
    finished = [r for r in caplog.records if r.getMessage() == "rpc finished" and getattr(r, "method", "") == "Enroll"]
    assert [r.reason for r in finished] == ["SHUTTING_DOWN", "SHUTTING_DOWN"]
    assert server.metrics.value("facecloak_errors_total", {"reason": "SHUTTING_DOWN"}) == 2 and cancelled(server) == 0


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

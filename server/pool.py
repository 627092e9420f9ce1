"""A bounded enrollment queue in front of a fixed set of worker threads.

Admission is decided at once: at most ``workers`` enrollments run and ``depth`` wait; a request
beyond that gets QUEUE_FULL immediately instead of piling up. Each job streams its events
(progress, then a result or an error) through its own thread-safe queue to the RPC thread.
Cancellation (client cancel, deadline, shutdown) is checked after every stage and every PGD
iteration, through the core's progress callback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..enroll import EnrollConfig, Enroller, EnrollResult
from .errors import ServiceError
from .metrics import Metrics

log = logging.getLogger("facecloak.server")


class JobStopped(Exception):
    """Raised from the progress callback to abandon an enrollment between iterations."""


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    fraction: float
    mask_index: int


@dataclass
class JobOutcome:
    results: list[EnrollResult]
    queue_seconds: float
    seeds: list[int]


@dataclass
class Job:
    """One admitted Enroll call. ``photo`` is dropped as soon as the masks are made (or the job ends)."""

    request_id: str
    configs: list[EnrollConfig]
    photo: np.ndarray | None = None
    deadline: float | None = None  # time.monotonic() value
    ahead: int = 0  # requests in the queue ahead of this one at admission
    events: queue.Queue = field(default_factory=queue.Queue)
    admitted_at: float = field(default_factory=time.monotonic)
    _stop_reason: str | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self, reason: str) -> None:
        """Ask the worker to abandon this job (CANCELLED, DEADLINE_EXCEEDED or SHUTTING_DOWN)."""
        if not self._stopped.is_set():
            self._stop_reason = reason
            self._stopped.set()

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop("DEADLINE_EXCEEDED")
        if self._stopped.is_set():
            raise JobStopped(self._stop_reason)

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason


class EnrollPool:
    def __init__(self, enroller: Enroller, workers: int, depth: int, metrics: Metrics) -> None:
        self.enroller = enroller
        self.workers = workers
        self.depth = depth
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enroll")
        self._lock = threading.Lock()
        self._admitted = 0  # waiting + running
        self._running = 0
        self._closed = False

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def running(self) -> int:
        return self._running

    def reserve(self) -> int:
        """Claim a slot or raise QUEUE_FULL / SHUTTING_DOWN; returns how many requests are ahead."""
        with self._lock:
            if self._closed:
                raise ServiceError("SHUTTING_DOWN", "the server is shutting down; retry on another instance")
            if self._admitted >= self.workers + self.depth:
                raise ServiceError("QUEUE_FULL", f"the enrollment queue is full ({self.depth} waiting); retry later",
                                   {"queue_depth": str(self.depth)})
            ahead = max(0, self._admitted - self.workers)
            self._admitted += 1
            self.metrics.queue_waiting.set(self._admitted - self._running)
            return ahead

    def release(self) -> None:
        """Give back a slot reserved for a request that never became a job (e.g. undecodable image)."""
        with self._lock:
            self._admitted -= 1
            self.metrics.queue_waiting.set(self._admitted - self._running)

    def submit(self, job: Job) -> None:
        """Run a job in a slot from ``reserve``."""
        self._executor.submit(self._run, job)

    def _set_running(self, delta: int) -> None:
        with self._lock:
            self._running += delta
            if delta < 0:
                self._admitted -= 1
            self.metrics.running.set(self._running)
            self.metrics.queue_waiting.set(self._admitted - self._running)

    def _run(self, job: Job) -> None:
        self._set_running(+1)
        try:
            queue_seconds = time.monotonic() - job.admitted_at
            self.metrics.queue_seconds.observe(queue_seconds)
            job.check()
            results = []
            for index, config in enumerate(job.configs):
                results.append(self.enroller.enroll(job.photo, config, progress=self._reporter(job, index)))
            job.photo = None  # the masks exist: the photo is no longer needed
            for result in results:
                for stage, seconds in result.timings.items():
                    self.metrics.stage_seconds.labels(stage).observe(seconds)
            job.events.put(JobOutcome(results, queue_seconds, [c.seed for c in job.configs]))
        except JobStopped as exc:
            job.events.put(stopped_error(str(exc)))
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the caller
            if not isinstance(exc, ServiceError) and ServiceError.from_exception(exc).reason == "INTERNAL":
                log.exception("enrollment failed", extra={"request_id": job.request_id})
            job.events.put(ServiceError.from_exception(exc))
        finally:
            job.photo = None
            self._set_running(-1)

    @staticmethod
    def _reporter(job: Job, index: int) -> Callable[[str, float], None]:
        def report(stage: str, fraction: float) -> None:
            job.check()  # raising here aborts the core between PGD iterations
            job.events.put(ProgressEvent(stage, float(fraction), index))

        return report

    def close(self, wait: bool = True) -> None:
        """Refuse new work; with ``wait``, block until the workers have finished what they hold."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait)


def stopped_error(reason: str) -> ServiceError:
    """The error for a job abandoned because of ``reason`` (CANCELLED, DEADLINE_EXCEEDED or SHUTTING_DOWN)."""
    return ServiceError(reason, _STOP_MESSAGES[reason])


_STOP_MESSAGES = {
    "CANCELLED": "the call was cancelled",
    "DEADLINE_EXCEEDED": "the deadline expired before the enrollment finished",
    "SHUTTING_DOWN": "the server shut down before the enrollment finished",
}

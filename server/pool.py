"""A bounded enrollment queue in front of a fixed set of worker threads.

Admission is decided at once: at most ``workers`` enrollments run and ``depth`` wait, and the photos
they hold add up to at most ``pixel_budget`` decoded pixels (counted from the image header, before
decoding); a request beyond that gets QUEUE_FULL immediately instead of piling up. Each job streams
its events (progress, then a result or an error) through its own thread-safe queue to the RPC thread.
Cancellation (client cancel, deadline, shutdown) is checked after every stage and every PGD
iteration, through the core's progress callback; a job stopped while it waits leaves the queue at
once, so its slot and pixels are free for the next caller.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
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
class Ticket:
    """One admitted request's claim on the pool: a slot and the decoded pixels of its photo."""

    pixels: int
    ahead: int  # requests in the queue ahead of this one at admission
    released: bool = False


@dataclass(eq=False)  # identity, not field equality: the queue finds and removes a job by ``is``
class Job:
    """One admitted Enroll call. ``photo`` is dropped as soon as the masks are made (or the job ends)."""

    request_id: str
    configs: list[EnrollConfig]
    photo: np.ndarray | None = None
    deadline: float | None = None  # time.monotonic() value
    ticket: Ticket = field(default_factory=lambda: Ticket(0, 0))  # released when the job ends
    events: queue.Queue = field(default_factory=queue.Queue)
    admitted_at: float = field(default_factory=time.monotonic)
    _stop_reason: str | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _on_stop: Callable[["Job"], None] | None = None  # the pool's withdrawal of a waiting job

    def stop(self, reason: str) -> None:
        """Ask the worker to abandon this job (CANCELLED, DEADLINE_EXCEEDED or SHUTTING_DOWN)."""
        if not self._stopped.is_set():
            self._stop_reason = reason
            self._stopped.set()
            if self._on_stop is not None:
                self._on_stop(self)

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop("DEADLINE_EXCEEDED")
        if self._stopped.is_set():
            raise JobStopped(self._stop_reason)

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def ahead(self) -> int:
        return self.ticket.ahead


class EnrollPool:
    def __init__(self, enroller: Enroller | None, workers: int, depth: int, metrics: Metrics,
                 pixel_budget: int | None = None) -> None:
        self.enroller = enroller
        self.workers = workers
        self.depth = depth
        self.pixel_budget = pixel_budget  # None: no bound beyond the per-image limit
        self.metrics = metrics
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._live: set[Job] = set()  # submitted, not finished: what a shutdown must stop
        self._admitted = 0  # tickets held: decoding + waiting + running
        self._running = 0
        self._pixels = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"enroll-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def running(self) -> int:
        return self._running

    @property
    def pixels(self) -> int:
        """Decoded pixels the admitted requests hold (or will hold once decoded)."""
        return self._pixels

    def reserve(self, pixels: int = 0) -> Ticket:
        """Claim a slot and ``pixels`` of the budget, or raise QUEUE_FULL / SHUTTING_DOWN."""
        with self._cond:
            if self._closed:
                raise ServiceError("SHUTTING_DOWN", "the server is shutting down; retry on another instance")
            self._drop_expired()
            if self._admitted >= self.workers + self.depth:
                raise ServiceError("QUEUE_FULL", f"the enrollment queue is full ({self.depth} waiting); retry later",
                                   {"queue_depth": str(self.depth)})
            if self.pixel_budget is not None and self._pixels + pixels > self.pixel_budget:
                raise ServiceError("QUEUE_FULL", "the photos in the enrollment queue already fill its pixel budget; "
                                   "retry later", {"pixel_budget": str(self.pixel_budget)})
            ticket = Ticket(pixels, ahead=max(0, self._admitted - self.workers))
            self._admitted += 1
            self._pixels += pixels
            self._update_gauges()
            return ticket

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket (idempotent): a request that never became a job, or a job that ended."""
        with self._cond:
            self._release(ticket)

    def submit(self, job: Job) -> None:
        """Queue a job holding a ticket from ``reserve``; SHUTTING_DOWN once the pool is closed."""
        with self._cond:
            if self._closed:
                raise ServiceError("SHUTTING_DOWN", "the server is shutting down; retry on another instance")
            job._on_stop = self._withdraw
            self._waiting.append(job)
            self._live.add(job)
            self._cond.notify()
        if job._stopped.is_set():  # stopped before it was queued (the call already ended)
            self._withdraw(job)

    def stop_all(self, reason: str) -> None:
        """Stop every queued and running job (running ones at their next iteration)."""
        with self._cond:
            jobs = list(self._live)
        for job in jobs:
            job.stop(reason)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request holds a ticket (or ``timeout`` s pass); True if idle."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._admitted:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, wait: bool = True) -> None:
        """Refuse new work; with ``wait``, block until the workers have finished what they hold."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    # -- internals (``_cond`` held where noted) --------------------------------------------------------------
    def _release(self, ticket: Ticket) -> None:  # _cond held
        if not ticket.released:
            ticket.released = True
            self._admitted -= 1
            self._pixels -= ticket.pixels
            self._update_gauges()
            self._cond.notify_all()

    def _update_gauges(self) -> None:  # _cond held
        self.metrics.running.set(self._running)
        self.metrics.queue_waiting.set(self._admitted - self._running)

    def _withdraw(self, job: Job) -> None:
        """A stopped job that still waits leaves the queue now: its slot and pixels go to the next caller."""
        with self._cond:
            if job not in self._waiting:  # a worker has it already: it stops at its next iteration
                return
            self._waiting.remove(job)
            self._finish(job)
        job.events.put(stopped_error(job.stop_reason or "CANCELLED"))

    def _drop_expired(self) -> None:  # _cond held (re-entrant)
        """Withdraw waiting jobs whose deadline has passed (gRPC's own callback may not have run yet)."""
        now = time.monotonic()
        for job in [j for j in self._waiting if j.deadline is not None and now >= j.deadline]:
            job.stop("DEADLINE_EXCEEDED")

    def _finish(self, job: Job) -> None:  # _cond held
        job.photo = None
        self._live.discard(job)
        self._release(job.ticket)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:
                    return  # closed, nothing left
                job = self._waiting.popleft()
                self._running += 1
                self._update_gauges()
            final = self._run(job)
            with self._cond:  # free the slot before the caller hears the end: it may call again at once
                self._running -= 1
                self._finish(job)
            job.events.put(final)

    def _run(self, job: Job) -> JobOutcome | ServiceError:
        """Enroll ``job``'s photo; its final event (the masks or the error), streaming progress on the way."""
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
            return JobOutcome(results, queue_seconds, [c.seed for c in job.configs])
        except JobStopped as exc:
            return stopped_error(str(exc))
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the caller
            if not isinstance(exc, ServiceError) and ServiceError.from_exception(exc).reason == "INTERNAL":
                log.exception("enrollment failed", extra={"request_id": job.request_id})
            return ServiceError.from_exception(exc)

    @staticmethod
    def _reporter(job: Job, index: int) -> Callable[[str, float], None]:
        def report(stage: str, fraction: float) -> None:
            job.check()  # raising here aborts the core between PGD iterations
            job.events.put(ProgressEvent(stage, float(fraction), index))

        return report


def stopped_error(reason: str) -> ServiceError:
    """The error for a job abandoned because of ``reason`` (CANCELLED, DEADLINE_EXCEEDED or SHUTTING_DOWN)."""
    return ServiceError(reason, _STOP_MESSAGES[reason])


_STOP_MESSAGES = {
    "CANCELLED": "the call was cancelled",
    "DEADLINE_EXCEEDED": "the deadline expired before the enrollment finished",
    "SHUTTING_DOWN": "the server shut down before the enrollment finished",
}

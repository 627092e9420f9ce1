"""Prometheus metrics of one server instance (own registry, so several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("facecloak_requests", "Finished RPCs by method and status code", ["method", "code"], registry=r)
        self.errors = Counter("facecloak_errors", "Failed RPCs by machine-readable reason", ["reason"], registry=r)
        self.queue_waiting = Gauge("facecloak_queue_waiting", "Enrollments waiting for a worker", registry=r)
        self.running = Gauge("facecloak_enrollments_running", "Enrollments a worker is running", registry=r)
        self.ready = Gauge("facecloak_ready", "1 once the models are loaded and the server accepts work", registry=r)
        self.queue_seconds = Histogram("facecloak_queue_wait_seconds", "Time from admission to a worker",
                                       buckets=_STAGE_BUCKETS, registry=r)
        self.stage_seconds = Histogram("facecloak_stage_seconds", "Enrollment stage latency", ["stage"],
                                       buckets=_STAGE_BUCKETS, registry=r)
        self.enroll_seconds = Histogram("facecloak_enroll_seconds", "Whole Enroll RPC latency (successful calls)",
                                        buckets=_STAGE_BUCKETS, registry=r)

    def serve(self, host: str, port: int) -> tuple[object, int]:
        """Expose /metrics over HTTP; returns (http server, bound port)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, server.server_port

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample (0 if absent): for tests and the load script."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

"""Load test of the enrollment service on loopback: many concurrent Enroll calls against a bounded queue.

Starts `facecloak-server` as a subprocess on 127.0.0.1 (queue depth 8 by default), measures one serial
enrollment as the baseline, then lets ``--callers`` threads fire ``--calls`` enrollments in total (bounded
by ``--seconds``; a caller that gets RESOURCE_EXHAUSTED backs off briefly and takes the next ticket).
Every call must end in success or RESOURCE_EXHAUSTED, the server must survive, and its peak RSS must stay
under ``--rss-limit-gib``. Prints throughput, p50/p95 latency and RSS; exit 1 if a check fails.

    python bench/server_load.py                          # 60 callers, 120 calls, sface, 2 views, 2 iterations
    python bench/server_load.py --surrogates sface,facenet --views 8 --iterations 10 --calls 60
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facecloak.assets import assets_dir
from facecloak.clients.python import ClientSettings, EnrollmentClient, RemoteEnrollError
from facecloak.enroll import EnrollConfig
from facecloak.optimise import PGDConfig
from facecloak.proto.convert import options_from_config

HOST = "127.0.0.1"  # loopback only, by design
PEOPLE = ("Tony_Blair", "Serena_Williams", "Hu_Jintao", "Laura_Bush", "Abdullah_Gul")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_server(args: argparse.Namespace, *extra: str) -> tuple[subprocess.Popen, int]:
    """``facecloak-server`` on loopback with ``args``' queue settings (and ``extra`` flags), once it is SERVING."""
    script = Path(sys.executable).with_name("facecloak-server")
    cmd = [str(script), "--host", HOST, "--port", "0", "--queue-depth", str(args.queue_depth), "--workers",
           str(args.workers), "--models", args.surrogates, "--grace-seconds", "10", "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    line = proc.stdout.readline()
    match = re.search(r"listening on [\d.]+:(\d+)", line)
    if not match:
        proc.kill()
        sys.exit(f"server did not start: {line!r}")
    port = int(match.group(1))
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service="facecloak.v1.EnrollmentService")
        for reply in health_pb2_grpc.HealthStub(channel).Watch(request, timeout=600):
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
    return proc, port


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=60, help="concurrent client threads (>= 50 for the check)")
    parser.add_argument("--calls", type=int, default=120, help="total Enroll calls (bound)")
    parser.add_argument("--seconds", type=float, default=240, help="wall-clock bound for firing new calls")
    parser.add_argument("--queue-depth", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--surrogates", default="sface")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--backoff", type=float, default=1.0, help="mean seconds a rejected caller waits")
    parser.add_argument("--rss-limit-gib", type=float, default=4.0)
    args = parser.parse_args()

    config = replace(EnrollConfig(), surrogates=tuple(args.surrogates.split(",")), views=args.views,
                     pgd=replace(EnrollConfig().pgd, iterations=args.iterations))
    options = options_from_config(config)
    photos = [(assets_dir() / "faces" / "lfw" / p / f"{p}_0001.jpg").read_bytes() for p in PEOPLE]

    started = time.perf_counter()
    proc, port = start_server(args)
    print(f"server pid {proc.pid} on {HOST}:{port} ready in {time.perf_counter() - started:.1f} s, "
          f"RSS {rss_kib(proc.pid) / 1024:.0f} MiB")
    sampler = RssSampler(proc.pid)
    sampler.start()
    client = EnrollmentClient(f"{HOST}:{port}", ClientSettings(), environ={})
    try:
        t0 = time.perf_counter()
        first = client.enroll(photos[0], options)
        serial = time.perf_counter() - t0
        stages = ", ".join(f"{t.stage} {t.seconds:.2f}" for t in first.result.masks[0].timings)
        print(f"serial enrollment {serial:.2f} s (server stages, s: {stages})")

        tickets = iter(range(args.calls))
        lock = threading.Lock()
        outcomes: list[tuple[str, float]] = []
        stop_at = time.perf_counter() + args.seconds
        barrier = threading.Barrier(args.callers)

        def caller(index: int) -> None:
            rng = random.Random(index)
            barrier.wait()  # all callers start together: the first wave is truly concurrent
            while time.perf_counter() < stop_at:
                with lock:
                    ticket = next(tickets, None)
                if ticket is None:
                    return
                t = time.perf_counter()
                try:
                    client.enroll(photos[ticket % len(photos)], options, timeout=max(30.0, stop_at - t + 120))
                    status = "OK"
                except RemoteEnrollError as err:
                    status = err.code.name
                with lock:
                    outcomes.append((status, time.perf_counter() - t))
                if status == "RESOURCE_EXHAUSTED":  # jittered so rejected callers do not retry in lockstep
                    time.sleep(args.backoff * (0.5 + rng.random()))

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        alive = proc.poll() is None
        health_ok = alive and client.describe(timeout=10).ready
    finally:
        client.close()
        sampler.stop.set()
        peak_hwm = rss_kib(proc.pid, "VmHWM") if proc.poll() is None else 0
        proc.terminate()
        proc.wait(30)

    counts = Counter(s for s, _ in outcomes)
    ok = [d for s, d in outcomes if s == "OK"]
    rejected = [d for s, d in outcomes if s == "RESOURCE_EXHAUSTED"]
    peak_gib = max(sampler.peak, peak_hwm) / 1024**2
    print(f"options: surrogates={args.surrogates} views={args.views} iterations={args.iterations}; "
          f"workers={args.workers} queue_depth={args.queue_depth}; callers={args.callers} calls={len(outcomes)}")
    print(f"outcomes: {dict(counts)}")
    print(f"wall {wall:.1f} s; throughput {len(ok) / wall:.2f} enroll/s vs serial {1 / serial:.2f} enroll/s "
          f"(ratio {len(ok) / wall * serial:.2f}); serial latency {serial:.2f} s")
    print(f"success latency p50 {pct(ok, 50):.2f} s, p95 {pct(ok, 95):.2f} s (includes queueing); "
          f"rejection latency p50 {pct(rejected, 50) * 1000:.1f} ms, p95 {pct(rejected, 95) * 1000:.1f} ms")
    print(f"server peak RSS {peak_gib:.2f} GiB (limit {args.rss_limit_gib} GiB)")

    failures = []
    if set(counts) - {"OK", "RESOURCE_EXHAUSTED"}:
        failures.append(f"unexpected outcomes {dict(counts)}")
    if not health_ok:
        failures.append("server died or stopped answering")
    if peak_gib >= args.rss_limit_gib:
        failures.append("RSS limit exceeded")
    if args.callers < 50:
        failures.append("fewer than 50 concurrent callers")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak test of the enrollment service on loopback: does memory stay flat and does every queue slot come back?

Starts `facecloak-server` as a subprocess on 127.0.0.1 (one worker), then runs ``--enrollments``
sequential enrollments with ``--malformed`` bad requests (corrupt, truncated, oversized images, bad
options, bytes that are not protobuf) and ``--stops`` calls that are cancelled or whose deadline
passes mixed in between. Prints the server's RSS after 5, 50 and 200 enrollments (or wherever the run
ends), the errors by reason, and the queue slots still held at the end (from /metrics). Then three
36 MP uploads at once (``--big``): the server's peak RSS while they run. Exit 1 if RSS after the last
enrollment exceeds RSS after 5 by more than ``--rss-growth`` (10 %), a slot is left held, the big
uploads peak above ``--big-limit-gib`` (1.5), or an outcome is undocumented.

Small enrollments so it finishes in minutes: sface only, 2 views, 2 iterations, 1 check view.

    python bench/server_soak.py             # 200 enrollments, 1,000 malformed, 100 cancels/deadlines
    python bench/server_soak.py --quick     # 200 enrollments, 200 malformed, 20 cancels/deadlines
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

import grpc
from PIL import Image

from server_load import HOST, PEOPLE, RssSampler, rss_kib, start_server
from facecloak.assets import assets_dir
from facecloak.clients.python import ClientSettings, EnrollmentClient, RemoteEnrollError
from facecloak.enroll import EnrollConfig
from facecloak.optimise import PGDConfig
from facecloak.proto import enrollment_pb2 as pb
from facecloak.proto.convert import options_from_config
from facecloak.server.errors import REASON_KEY, REASONS

CHECKPOINTS = (5, 50, 200)
SMALL = replace(EnrollConfig(), surrogates=("sface",), views=2, check_views=1, pgd=PGDConfig(iterations=2))
SLOW = replace(SMALL, pgd=PGDConfig(iterations=100))  # long enough to be cancelled or to outlive a deadline
ENROLL_METHOD = "/facecloak.v1.EnrollmentService/Enroll"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.split(" ")[0] == name)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def malformed_requests(rng: random.Random, photo: bytes, options: pb.EnrollOptions) -> list[bytes]:
    """Serialized requests that must each end in a documented error, never a crash or a held slot."""
    huge_png = bytearray(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (60000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00")
    flipped = bytearray(photo)
    for _ in range(16):
        flipped[rng.randrange(len(flipped))] ^= rng.randrange(1, 256)
    bad_options = pb.EnrollOptions(views=10_000, eps=float("nan"))
    return [
        rng.randbytes(rng.randrange(1, 512)),  # not protobuf
        pb.EnrollRequest(image=photo[: rng.randrange(1, len(photo))], options=options).SerializeToString(),
        pb.EnrollRequest(image=bytes(flipped), options=options).SerializeToString(),
        pb.EnrollRequest(image=bytes(huge_png), options=options).SerializeToString(),
        pb.EnrollRequest(image=b"", options=options).SerializeToString(),
        pb.EnrollRequest(image=photo, options=bad_options).SerializeToString(),
    ]


def outcome(call) -> str:
    """'OK' or the documented reason a raw Enroll stream ended with ('UNDOCUMENTED <code>' otherwise)."""
    try:
        for _ in call:
            pass
        return "OK"
    except grpc.RpcError as err:
        reason = dict(err.trailing_metadata() or ()).get(REASON_KEY)
        return reason if reason in REASONS else f"UNDOCUMENTED {err.code().name}"


def stop_call(client: EnrollmentClient, photo: bytes, options: pb.EnrollOptions, deadline: bool) -> str:
    """A call that ends early: its deadline passes mid-way, or the client cancels after the first iteration."""
    if deadline:
        try:
            client.enroll(photo, options, timeout=1.5)
            return "OK"
        except RemoteEnrollError as err:
            return err.reason
    call = client.start_enroll(photo, options)
    for response in call:
        if response.progress.stage == "optimise":
            call.cancel()
            break
    return "CANCELLED (client)"


def big_uploads(port: int, pid: int, count: int) -> tuple[Counter, float]:
    """``count`` 36 MP JPEG uploads at once: their outcomes and the server's peak RSS (GiB) meanwhile."""
    face = Image.open(assets_dir() / "faces" / "lfw" / "Tony_Blair" / "Tony_Blair_0001.jpg")
    data = jpeg(face.resize((7360, 4912), Image.BICUBIC))
    options = options_from_config(SMALL)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the resident peak from here on
    outcomes: Counter = Counter()

    def upload() -> None:
        with EnrollmentClient(f"{HOST}:{port}", ClientSettings(), environ={}) as client:
            try:
                client.enroll(data, options, timeout=900)
                outcomes["OK"] += 1
            except RemoteEnrollError as err:
                outcomes[err.reason] += 1

    threads = [threading.Thread(target=upload) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, rss_kib(pid, "VmHWM") / 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 malformed and 20 cancels/deadlines")
    parser.add_argument("--enrollments", type=int, default=200)
    parser.add_argument("--malformed", type=int, default=None, help="default 1,000 (200 with --quick)")
    parser.add_argument("--stops", type=int, default=None, help="cancels + deadlines, default 100 (20 with --quick)")
    parser.add_argument("--big", type=int, default=3, help="concurrent 36 MP uploads at the end (0: none)")
    parser.add_argument("--rss-growth", type=float, default=0.10)
    parser.add_argument("--big-limit-gib", type=float, default=1.5)
    parser.add_argument("--models", default="sface", help="surrogates the server loads (enrollments use sface)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    malformed = args.malformed if args.malformed is not None else (200 if args.quick else 1000)
    stops = args.stops if args.stops is not None else (20 if args.quick else 100)
    server_args = argparse.Namespace(queue_depth=8, workers=1, surrogates=args.models)

    rng = random.Random(args.seed)
    photos = [(assets_dir() / "faces" / "lfw" / p / f"{p}_0001.jpg").read_bytes() for p in PEOPLE]
    small, slow = options_from_config(SMALL), options_from_config(SLOW)
    metrics_port = free_port()
    proc, port = start_server(server_args, "--metrics-port", str(metrics_port))
    print(f"server pid {proc.pid} on {HOST}:{port}, RSS at ready {rss_kib(proc.pid) / 1024:.0f} MiB")
    sampler = RssSampler(proc.pid)
    sampler.start()
    reasons: Counter = Counter()
    rss: dict[int, float] = {}
    failures = []
    started = time.perf_counter()
    try:
        with EnrollmentClient(f"{HOST}:{port}", ClientSettings(), environ={}) as client, \
                grpc.insecure_channel(f"{HOST}:{port}") as channel:
            raw = channel.unary_stream(ENROLL_METHOD, request_serializer=None, response_deserializer=None)
            for i in range(1, args.enrollments + 1):
                client.enroll(photos[i % len(photos)], small)
                reasons["OK (enrollment)"] += 1
                for _ in range(malformed * i // args.enrollments - malformed * (i - 1) // args.enrollments):
                    reasons[outcome(raw(rng.choice(malformed_requests(rng, photos[0], small)), timeout=60))] += 1
                for j in range(stops * (i - 1) // args.enrollments, stops * i // args.enrollments):
                    reasons[stop_call(client, photos[j % len(photos)], slow, deadline=j % 2 == 1)] += 1
                if i in CHECKPOINTS or i == args.enrollments:
                    time.sleep(1.0)  # let the last call's buffers go
                    rss[i] = rss_kib(proc.pid) / 1024
                    print(f"after {i} enrollments ({time.perf_counter() - started:.0f} s): RSS {rss[i]:.0f} MiB", flush=True)
            time.sleep(3.0)  # stopped jobs finish their current iteration
            held = metric(metrics_port, "facecloak_queue_waiting") + metric(metrics_port, "facecloak_enrollments_running")
            big, big_peak = big_uploads(port, proc.pid, args.big) if args.big else (Counter(), 0.0)
    finally:
        sampler.stop.set()
        proc.terminate()
        proc.wait(60)

    print(f"settings: server models {args.models}; enrollments sface, 2 views, 2 iterations, 1 check view; "
          f"{args.enrollments} enrollments, {malformed} "
          f"malformed, {stops} cancels/deadlines (100 iterations each); {time.perf_counter() - started:.0f} s")
    print("outcomes by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    print(f"queue slots held at the end: {held:.0f}")
    first, last = rss.get(min(rss)), rss[max(rss)]
    print(f"RSS after {min(rss)}: {first:.0f} MiB; after {max(rss)}: {last:.0f} MiB ({(last / first - 1) * 100:+.1f} %); "
          f"peak during the soak {sampler.peak / 1024:.0f} MiB")
    if args.big:
        print(f"{args.big} concurrent 36 MP uploads: {dict(big)}; server peak RSS {big_peak:.2f} GiB")
    if last > first * (1 + args.rss_growth):
        failures.append(f"RSS grew by more than {args.rss_growth:.0%}")
    if held:
        failures.append(f"{held:.0f} queue slots still held")
    if any(k.startswith("UNDOCUMENTED") for k in reasons):
        failures.append("undocumented outcomes")
    if args.big and big_peak > args.big_limit_gib:
        failures.append(f"36 MP uploads peaked above {args.big_limit_gib} GiB")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Bounded, seeded fuzzing of Enroll: malformed images and malformed protobuf. No crash, only documented errors."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from facecloak.proto import enrollment_pb2 as pb
from facecloak.server.errors import REASON_KEY, REASONS
from .test_server_helpers import TINY, lfw_bytes, options, running_server, wait_until

CASES = 60  # per family; each call is a quick rejection (or, rarely, a one-iteration enrollment)
METHOD = "/facecloak.v1.EnrollmentService/Enroll"


def noisy_image(rng: np.random.Generator, fmt: str) -> bytes:
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge canvas (a decompression bomb) with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip bytes
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 16))):
            data[pos] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncate
        data = data[: int(rng.integers(0, len(data)))]
    elif kind == 2:  # splice random bytes in
        pos = int(rng.integers(0, len(data)))
        data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 512)), dtype=np.uint8).tobytes()
    else:  # corrupt the header region
        data[: min(len(data), 32)] = rng.integers(0, 256, min(len(data), 32), dtype=np.uint8).tobytes()
    return bytes(data)


def outcome(channel: grpc.Channel, payload: bytes) -> tuple[str, str]:
    """(status code name, reason) of one raw Enroll call; ("OK", "") when a result arrived.

    A status without a documented reason comes back as (code, "details: ...") so a failure shows it."""
    call = channel.unary_stream(METHOD, request_serializer=lambda b: b, response_deserializer=pb.EnrollResponse.FromString)
    responses = call(payload, timeout=180)
    try:
        last = list(responses)[-1]
        assert last.HasField("result")
        return "OK", ""
    except grpc.RpcError as err:
        return err.code().name, dict(err.trailing_metadata() or ()).get(REASON_KEY, f"details: {err.details()}")


def assert_documented(results: list[tuple[str, str]]) -> None:
    for code, reason in results:
        if code != "OK":
            assert reason in REASONS and REASONS[reason].name == code, (code, reason)
            assert reason != "INTERNAL", "a malformed input reached an unexpected code path"


@pytest.fixture(scope="module")
def server():
    with running_server(max_image_bytes=1_000_000, max_image_pixels=4_000_000) as srv:
        yield srv


def test_malformed_images(server):
    rng = np.random.default_rng(1234)
    seeds = [noisy_image(rng, fmt) for fmt in ("PNG", "JPEG", "WEBP", "TIFF")] + [lfw_bytes()]
    payloads = [png_claiming(100_000, 100_000), png_claiming(0, 0), b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\0\0\0\0WEBP"]
    payloads += [mutate(rng, seeds[int(rng.integers(0, len(seeds)))]) for _ in range(CASES)]
    opts = options(TINY)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        results = [outcome(channel, pb.EnrollRequest(image=p, options=opts).SerializeToString()) for p in payloads]
    assert_documented(results)
    assert results[0] == ("INVALID_ARGUMENT", "IMAGE_TOO_LARGE")
    assert ("INVALID_ARGUMENT", "UNDECODABLE_IMAGE") in results and ("INVALID_ARGUMENT", "NO_FACE") in results
    wait_until(lambda: server.pool.admitted == 0, what="every slot to be released")  # none leaked


def random_options(rng: np.random.Generator) -> pb.EnrollOptions:
    extreme_float = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-300, 1e300, 64.0, 64.0001, 8.0]
    extreme_uint = [0, 1, 2, 3, 7, 9, 1000, 2**31, 2**32 - 1]
    opts = pb.EnrollOptions()
    for name in ("eps", "eps_focus"):
        if rng.random() < 0.6:
            setattr(opts, name, extreme_float[int(rng.integers(0, len(extreme_float)))])
    for name in ("iterations", "views", "check_views", "seed", "mask_count"):
        if rng.random() < 0.6:
            setattr(opts, name, extreme_uint[int(rng.integers(0, len(extreme_uint)))])
    if rng.random() < 0.5:
        opts.budget_preset = int(rng.choice([0, 1, 2, 3, 4, -1, 2**31 - 1]))
    for _ in range(int(rng.integers(0, 4))):
        opts.surrogates.append(rng.choice(["sface", "facenet", "", "x" * 10_000, "\u202e\u0000sface", "SFACE"]))
    return opts


def test_malformed_protobuf(server):
    rng = np.random.default_rng(99)
    image = noisy_image(rng, "PNG")
    valid = pb.EnrollRequest(image=image, options=options(TINY)).SerializeToString()
    payloads = [rng.integers(0, 256, int(rng.integers(1, 256)), dtype=np.uint8).tobytes() for _ in range(CASES // 2)]
    payloads += [mutate(rng, valid) for _ in range(CASES // 2)]
    payloads += [pb.EnrollRequest(image=image, options=random_options(rng)).SerializeToString() for _ in range(CASES)]
    payloads += [b"\x12" + b"\xff" * 9 + b"\x01",  # options with an over-long varint length
                 b"\x08\x01",  # field 1 (bytes) sent as a varint: wrong wire type
                 b"\x12\x02\x08\x01" * 1000]  # the options field repeated: proto3 merges, still valid
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        results = [outcome(channel, p) for p in payloads]
    assert_documented(results)
    reasons = {reason for _, reason in results}
    assert {"MALFORMED_REQUEST", "BAD_OPTION"} <= reasons
    wait_until(lambda: server.pool.admitted == 0, what="every slot to be released")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # still serving normally afterwards
        assert outcome(channel, pb.EnrollRequest(image=lfw_bytes(), options=options(TINY)).SerializeToString()) == ("OK", "")

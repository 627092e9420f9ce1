"""Every request-level error reason of Enroll, as a client sees it (status code + machine-readable reason)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from facecloak.errors import AssetMissingError, NoFaceError
from facecloak.imageio import read_image
from facecloak.proto import enrollment_pb2 as pb
from facecloak.server.errors import ERROR_INFO_KEY, REASON_KEY, REASONS, ServiceError
from .test_server_helpers import client_for, faceless_png, lfw_path, options, png_bytes, remote_error, running_server

MAX_BYTES = 300_000
MAX_PIXELS = 1_000_000
DOCS = Path(__file__).resolve().parents[1] / "docs" / "server.md"


@pytest.fixture(scope="module")
def server():
    with running_server(max_image_bytes=MAX_BYTES, max_image_pixels=MAX_PIXELS, max_views=8, max_iterations=20,
                        max_masks=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with client_for(server) as c:
        yield c


def tiny_face_photo() -> bytes:
    """A real face shrunk to ~20 px on a grey canvas: YuNet finds it, but it is below min_face_px."""
    face = cv2.resize(read_image(lfw_path("Tony_Blair", 1)), (50, 50), interpolation=cv2.INTER_AREA)
    canvas = np.full((200, 200, 3), 128, np.uint8)
    canvas[50:100, 50:100] = face
    return png_bytes(canvas)


@pytest.mark.parametrize("image, reason", [
    (b"", "UNDECODABLE_IMAGE"),
    (b"definitely not a photo", "UNDECODABLE_IMAGE"),
    (b"\xff\xd8\xff\xe0" + bytes(64), "UNDECODABLE_IMAGE"),  # a JPEG header and nothing else
    (bytes(MAX_BYTES + 1), "IMAGE_TOO_LARGE"),
    (png_bytes(np.zeros((1001, 1000, 3), np.uint8)), "IMAGE_TOO_LARGE"),  # few bytes, too many pixels
    (faceless_png(), "NO_FACE"),
    (png_bytes(np.full((1, 5000, 3), 128, np.uint8)), "NO_FACE"),  # detection used to resize it to height 0
    (tiny_face_photo(), "FACE_TOO_SMALL"),
], ids=["empty", "garbage", "truncated-jpeg", "too-many-bytes", "too-many-pixels", "no-face", "5000x1", "face-too-small"])
def test_image_errors(client, image, reason):
    err = remote_error(client.enroll, image, options())
    assert (err.reason, err.code) == (reason, grpc.StatusCode.INVALID_ARGUMENT)
    assert err.request_id
    # The CLI keeps its local exit codes for the same failures.
    assert err.exit_code == {"UNDECODABLE_IMAGE": 3, "IMAGE_TOO_LARGE": 4, "NO_FACE": 5, "FACE_TOO_SMALL": 6}[reason]


@pytest.mark.parametrize("fields", [
    {"views": 0}, {"views": 9}, {"iterations": 0}, {"iterations": 21}, {"check_views": 10_000},
    {"mask_count": 3}, {"eps": float("nan")}, {"eps": -1.0}, {"eps": 65.0}, {"eps_focus": float("inf")},
    {"eps": 16.0, "eps_focus": 8.0}, {"surrogates": ["no-such-model"]}, {"surrogates": ["sface", "sface"]},
    {"surrogates": ["facenet"]},  # registered, but not loaded on this server
    {"budget_preset": 77}, {"seed": 2**32 - 1, "mask_count": 2},
    {"visibility_weight": -1.0}, {"visibility_weight": float("nan")}, {"visibility_weight": 101.0},
], ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_bad_options(client, fields):
    err = remote_error(client.enroll, faceless_png(), options(**fields))
    assert (err.reason, err.code) == ("BAD_OPTION", grpc.StatusCode.INVALID_ARGUMENT)
    assert err.exit_code == 2


def test_options_are_checked_before_the_image_is_decoded(client):
    assert remote_error(client.enroll, b"garbage", options(views=0)).reason == "BAD_OPTION"


def test_malformed_request_bytes(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw = channel.unary_stream("/facecloak.v1.EnrollmentService/Enroll",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            list(raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10))  # field 1 claims ~4 GB of bytes
    err = info.value
    trailing = dict(err.trailing_metadata())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and trailing[REASON_KEY] == "MALFORMED_REQUEST"
    detail = pb.ErrorInfo.FromString(trailing[ERROR_INFO_KEY])
    assert (detail.reason, detail.domain) == ("MALFORMED_REQUEST", "facecloak.v1")
    assert re.fullmatch(r"[0-9a-f]{32}", trailing["x-request-id"])


def test_caller_request_id_is_echoed_and_bad_ones_replaced(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        enroll = channel.unary_stream("/facecloak.v1.EnrollmentService/Enroll",
                                      request_serializer=pb.EnrollRequest.SerializeToString,
                                      response_deserializer=pb.EnrollResponse.FromString)
        for given, echoed in (("trace-42", "trace-42"), ("a/b;c", None), ("x" * 100, None)):
            call = enroll(pb.EnrollRequest(image=b"x"), metadata=(("x-request-id", given),), timeout=10)
            with pytest.raises(grpc.RpcError):
                list(call)
            got = dict(call.trailing_metadata())["x-request-id"]
            assert got == echoed if echoed else re.fullmatch(r"[0-9a-f]{32}", got)


def test_core_errors_map_to_their_reasons_and_unknown_ones_stay_generic():
    assert ServiceError.from_exception(NoFaceError("x")).code == grpc.StatusCode.INVALID_ARGUMENT
    assert ServiceError.from_exception(AssetMissingError("gone")).code == grpc.StatusCode.UNAVAILABLE
    internal = ServiceError.from_exception(RuntimeError("secret detail"))
    assert internal.reason == "INTERNAL" and "secret" not in internal.message
    with pytest.raises(ValueError):
        ServiceError("NOT_A_DOCUMENTED_REASON", "x")


def test_every_reason_is_documented_with_its_code():
    text = DOCS.read_text()
    for reason, code in REASONS.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{reason}`")), None)
        assert row is not None, f"{reason} missing from docs/server.md"
        assert code.name in row, f"{reason} documented with the wrong status code"


def test_huge_option_values_are_not_echoed_into_the_status(client):
    err = remote_error(client.enroll, faceless_png(), options(surrogates=["x" * 100_000]))
    assert (err.reason, err.code) == ("BAD_OPTION", grpc.StatusCode.INVALID_ARGUMENT)
    assert len(str(err)) < 1200
    assert len(ServiceError("INTERNAL", "y" * 10_000).message) <= 1024

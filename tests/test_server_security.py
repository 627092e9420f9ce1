"""API keys, per-key rate limits, message size limits, TLS and mTLS."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facecloak.clients.python import ClientSettings, EnrollmentClient, enroll_remote
from facecloak.errors import BadOptionError
from facecloak.mask import decode_mask
from facecloak.server.auth import RateLimiter, load_api_keys
from facecloak.server.errors import ServiceError
from .test_server_helpers import TINY, client_for, lfw_bytes, make_pki, options, remote_error, running_server

GOOD = "k" * 32
OTHER = "o" * 32


@pytest.fixture(scope="module")
def keyed_server():
    with running_server(api_keys=(f"app:{GOOD}", f"web:{OTHER}"), rate_limit_per_minute=1.0,
                        rate_limit_burst=2, max_image_bytes=4096) as srv:
        yield srv


@pytest.mark.parametrize("key, reason", [(None, "API_KEY_MISSING"), ("wrong-" + GOOD, "API_KEY_INVALID"),
                                         (GOOD[:-1], "API_KEY_INVALID")])
def test_enroll_and_describe_need_a_valid_key(keyed_server, key, reason):
    with client_for(keyed_server, api_key=key) as client:
        for call in (lambda: client.enroll(b"x", options()), client.describe):
            err = remote_error(call)
            assert (err.reason, err.code) == (reason, grpc.StatusCode.UNAUTHENTICATED)


def test_good_key_passes_and_rate_limit_is_per_key(keyed_server):
    with client_for(keyed_server, api_key=GOOD) as good, client_for(keyed_server, api_key=OTHER) as other:
        assert good.describe().auth_required
        # Two calls fit the burst: they get past auth and the limiter and fail later, on the image.
        for _ in range(2):
            assert remote_error(good.enroll, b"x", options()).reason == "UNDECODABLE_IMAGE"
        err = remote_error(good.enroll, b"x", options())
        assert (err.reason, err.code) == ("RATE_LIMITED", grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert 0 < int(err.details["retry_after_ms"]) <= 60_000
        assert remote_error(other.enroll, b"x", options()).reason == "UNDECODABLE_IMAGE"  # its own bucket


def test_health_is_open_without_a_key(keyed_server):
    with grpc.insecure_channel(f"127.0.0.1:{keyed_server.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_oversized_message_is_refused_by_the_transport(keyed_server):
    with client_for(keyed_server, api_key=OTHER) as client:
        err = remote_error(client.enroll, bytes(200_000), options())
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "RESOURCE_EXHAUSTED"


def test_without_auth_the_rate_limit_follows_the_peer_host_not_the_connection():
    with running_server(rate_limit_per_minute=1.0, rate_limit_burst=1) as server:
        with client_for(server) as first:
            assert remote_error(first.enroll, b"x", options()).reason == "UNDECODABLE_IMAGE"
        with client_for(server) as second:  # a new connection from another local port
            assert remote_error(second.enroll, b"x", options()).reason == "RATE_LIMITED"


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=1, clock=lambda: now[0])
    limiter.acquire("a")
    with pytest.raises(ServiceError) as info:
        limiter.acquire("a")
    assert info.value.reason == "RATE_LIMITED" and info.value.details["retry_after_ms"] == "1001"
    now[0] = 1.0
    limiter.acquire("a")
    RateLimiter(per_minute=0, burst=1).acquire("anyone")  # 0 = off


def test_api_key_file_parsing_never_echoes_secrets(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# comment\n\napp:{GOOD}\n")
    assert load_api_keys((f"web:{OTHER}",), str(path)) == {"web": OTHER, "app": GOOD}
    path.write_text("short:tooshortsecret\n")
    with pytest.raises(BadOptionError) as info:
        load_api_keys((), str(path))
    assert "tooshortsecret" not in str(info.value)
    with pytest.raises(BadOptionError, match="duplicate"):
        load_api_keys((f"app:{GOOD}", f"app:{OTHER}"), None)


def test_tls_server_refuses_plaintext_and_untrusted_roots(tmp_path):
    pki, stranger = make_pki(tmp_path, "good"), make_pki(tmp_path, "evil")
    with running_server(tls_cert=pki["server_cert"], tls_key=pki["server_key"]) as server:
        target = f"127.0.0.1:{server.port}"
        with EnrollmentClient(target, ClientSettings(root_certificates=pki["ca"]), environ={}) as client:
            assert client.describe().ready
        for settings in (ClientSettings(), ClientSettings(root_certificates=stranger["ca"])):
            with EnrollmentClient(target, settings, environ={}) as client:
                assert remote_error(client.describe, timeout=5).code == grpc.StatusCode.UNAVAILABLE


def test_mtls_with_api_key_enrolls_and_refuses_clients_without_certificates(tmp_path, monkeypatch):
    pki = make_pki(tmp_path)
    with running_server(tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_client_ca=pki["ca"],
                        api_keys=(f"app:{GOOD}",)) as server:
        target = f"127.0.0.1:{server.port}"
        with EnrollmentClient(target, ClientSettings(root_certificates=pki["ca"], api_key=GOOD), environ={}) as c:
            assert remote_error(c.describe, timeout=5).code == grpc.StatusCode.UNAVAILABLE  # no client certificate
        mask = enroll_remote(target, lfw_bytes(), TINY, api_key=GOOD, root_certificates=pki["ca"],
                             certificate_chain=pki["client_cert"], private_key=pki["client_key"])
        assert decode_mask(mask).models == ("sface",)
        # The CLI cannot pass arguments: the same settings come from the environment.
        for var, value in (("FACECLOAK_API_KEY", GOOD), ("FACECLOAK_TLS_CA", pki["ca"]),
                           ("FACECLOAK_TLS_CERT", pki["client_cert"]), ("FACECLOAK_TLS_KEY", pki["client_key"])):
            monkeypatch.setenv(var, value)
        with EnrollmentClient(target) as client:
            assert client.describe().auth_required

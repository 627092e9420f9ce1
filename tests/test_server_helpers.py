"""Shared helpers for the tests/test_server_*.py files (no tests here): servers, photos, certificates."""

from __future__ import annotations

import datetime
import io
import ipaddress
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecloak.assets import assets_dir
from facecloak.clients.python import ClientSettings, EnrollmentClient, RemoteEnrollError
from facecloak.enroll import EnrollConfig
from facecloak.optimise import PGDConfig
from facecloak.proto.convert import options_from_config
from facecloak.server.app import FaceCloakServer, default_warmup
from facecloak.server.config import ServerConfig

READY_TIMEOUT = 300  # the first start on a fresh machine builds the anchor gallery (~35 s, more under load)
# Cheapest real enrollment: one surrogate, one view, one PGD iteration, no self-check.
TINY = EnrollConfig(surrogates=("sface",), views=1, check_views=0, pgd=PGDConfig(iterations=1))
# Long enough to be cancelled mid-way: a worker that ignored a stop would run ~100 more iterations, not 1 or 2.
LONG = replace(TINY, pgd=PGDConfig(iterations=100))


def lfw_path(name: str = "Tony_Blair", index: int = 1) -> Path:
    return assets_dir() / "faces" / "lfw" / name / f"{name}_{index:04d}.jpg"


def lfw_bytes(name: str = "Tony_Blair", index: int = 1) -> bytes:
    return lfw_path(name, index).read_bytes()


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def faceless_png(size: int = 96) -> bytes:
    """A smooth colour gradient: decodes fine, contains no face."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))], -1)
    return png_bytes(rgb.astype(np.uint8))


def options(config: EnrollConfig = TINY, **fields):
    opts = options_from_config(config)
    for key, value in fields.items():
        if isinstance(value, list):
            del getattr(opts, key)[:]
            getattr(opts, key).extend(value)
        else:
            setattr(opts, key, value)
    return opts


@contextmanager
def running_server(wait: bool = True, enroller=None, warmup=default_warmup, **settings):
    """A real server on 127.0.0.1 (any free port) with the sface surrogate; stopped on exit. PyTorch eager unless
    ``backend`` says otherwise: these tests are about serving, and the default compiled step has its own
    (tests/test_server_aot.py)."""
    config = ServerConfig(**{"port": 0, "models": ("sface",), "grace_seconds": 0.0, "backend": "torch-cpu", **settings})
    server = FaceCloakServer(config, enroller=enroller, warmup=warmup)
    server.start()
    try:
        if wait:
            assert server.wait_ready(READY_TIMEOUT), server.readiness.problem
        yield server
    finally:
        server.stop(0)


def client_for(server: FaceCloakServer, **settings) -> EnrollmentClient:
    return EnrollmentClient(f"127.0.0.1:{server.port}", ClientSettings(**settings), environ={})


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def remote_error(fn, *args, **kwargs) -> RemoteEnrollError:
    with pytest.raises(RemoteEnrollError) as info:
        fn(*args, **kwargs)
    return info.value


# -- throw-away TLS material (never committed; made per test run) ------------------------------------------------
def _name(common: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, issuer_key, issuer: str | None, key, ca: bool, sans: list | None = None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer or subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path, tag: str = "test") -> dict[str, str]:
    """A CA plus a server certificate (127.0.0.1, localhost) and a client certificate it signed; PEM paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def write(name: str, data: bytes) -> str:
        path = folder / f"{tag}-{name}.pem"
        path.write_bytes(data)
        return str(path)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{tag} CA", ca_key, None, ca_key, ca=True)
    out = {"ca": write("ca", ca.public_bytes(serialization.Encoding.PEM))}
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for role, extra in (("server", sans), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"{tag} {role}", ca_key, f"{tag} CA", key, ca=False, sans=extra)
        out[f"{role}_cert"] = write(f"{role}-cert", cert.public_bytes(serialization.Encoding.PEM))
        out[f"{role}_key"] = write(f"{role}-key", key_pem(key))
    return out

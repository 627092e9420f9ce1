"""The server on its default backend: the PGD step compiled ahead of time (auto), prepared at the first warm-up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facecloak.assemble import EnrollerSpec, build_enroller
from facecloak.clients.python import ClientSettings, EnrollmentClient
from facecloak.enroll import EnrollConfig
from facecloak.imageio import read_image
from facecloak.mask import decode_mask, encode_mask
from facecloak.optimise import PGDConfig

from .test_server_helpers import client_for, lfw_bytes, lfw_path, options, running_server

pytestmark = pytest.mark.slow
# The server compiles its step for its default shape (8 views); a request of that shape runs on it.
CONFIG = EnrollConfig(surrogates=("sface",), views=8, check_views=1, seed=5, pgd=PGDConfig(iterations=3))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user cache shared by this module's servers: the first one compiles the step, the others load it."""
    return tmp_path_factory.mktemp("cache")


def test_console_script_compiles_its_default_step_serves_and_stops_on_sigterm(cache: Path) -> None:
    """``facecloak-server`` with no backend setting: auto, compiled at warm-up in a child process whose warnings
    would break the JSON-lines log."""
    env = {**os.environ, "FACECLOAK_SERVER_MODELS": "sface", "FACECLOAK_CACHE": str(cache)}
    env.pop("FACECLOAK_SERVER_BACKEND", None)
    script = Path(sys.executable).with_name("facecloak-server")  # the installed console script
    proc = subprocess.Popen([str(script), "--port", "0", "--grace-seconds", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="facecloak.v1.EnrollmentService")
            for response in health.Watch(request, timeout=600):  # the first warm-up compiles (minutes under load)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    break
        with EnrollmentClient(f"127.0.0.1:{port}", ClientSettings(), environ={}) as client:
            assert client.describe().backend == "aot-cpu"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        logs = proc.stderr.read()
        assert '"msg": "ready"' in logs and '"msg": "stopped"' in logs
        assert all(json.loads(line) for line in logs.splitlines())  # JSON lines only, gRPC's and the compile's included
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [p.name for p in (cache / "aot").iterdir()] and all((p / "manifest.json").exists() for p in (cache / "aot").iterdir())


def test_concurrent_enrollments_on_the_compiled_step_equal_a_local_one(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECLOAK_CACHE", str(cache))
    local = build_enroller(EnrollerSpec(backend="auto", surrogates=("sface",), views=8, view_backend="augment"))
    assert local.backend == "aot-cpu", local.notes
    # float32 on both sides (the server's setting; requests cannot carry it): bfloat16's rounding would follow the
    # thread count, which other tests in this process may change
    float32 = replace(CONFIG, pgd=replace(CONFIG.pgd, bf16_convolutions=False))
    expected = local.enroller.enroll(read_image(lfw_path("Tony_Blair", 1)), float32)
    with running_server(backend="auto", workers=2, bf16_convolutions=False) as server, client_for(server) as client:
        assert client.describe().backend == "aot-cpu"
        replies: list[object] = [None, None]

        def enroll(i: int) -> None:
            replies[i] = client.enroll(lfw_bytes("Tony_Blair", 1), options(CONFIG))

        threads = [threading.Thread(target=enroll, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    shipped = decode_mask(encode_mask(expected.mask)).delta
    for reply in replies:  # two steps at once on one compiled package: each the mask one enrollment alone learns
        assert (np.abs(decode_mask(reply.masks[0]).delta - shipped) < 1 / 255).mean() > 0.9  # as tests/test_aot_backend.py
        check = reply.result.masks[0].self_check[0]
        assert check.similarity_after < check.similarity_before - 0.05

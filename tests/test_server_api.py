"""The API surface: committed stubs, Describe, reflection, health, metrics, configuration, the console script."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from facecloak.clients.python import RemoteEnrollError
from facecloak.errors import BadOptionError
from facecloak.optimise.precision import native_bf16
from facecloak.proto import enrollment_pb2 as pb
from facecloak.server.config import load_config
from facecloak.server.main import main as server_main
from .test_server_helpers import client_for, running_server

ROOT = Path(__file__).resolve().parents[1]
SFACE_SHA256 = "ffe11fd56e8bd680e741924b5d58b36bdd077c331a6fb218f0dd921c6394f86b"  # shared/assets/README.md


def test_committed_stubs_match_the_proto():
    done = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_describe_reflection_health_and_metrics():
    with running_server(metrics_port=0) as server, client_for(server) as client:
        info = client.describe()
        assert (info.api_version, info.ready, info.backend, info.auth_required) == ("facecloak.v1", True, "torch-cpu", False)
        assert [(m.name, m.sha256, m.embedding_dim) for m in info.models] == [("sface", SFACE_SHA256, 128)]
        assert info.limits.queue_depth == 8 and info.limits.max_message_bytes > info.limits.max_image_bytes
        assert info.limits.max_queued_pixels == 64_000_000
        assert len(info.notes) == 2 and info.notes[0].startswith("augment")  # why these views (no Arc2Face here)
        assert info.notes[1] == "surrogates in float32" + (  # the hardware's default precision
            ", convolutions on bfloat16 arithmetic (this CPU has bfloat16 units)" if native_bf16() else "")
        assert list(info.defaults.surrogates) == ["sface"] and info.versions["grpcio"] == grpc.__version__

        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                     timeout=5))
            services = {s.name for s in replies[0].list_services_response.service}
            assert {"facecloak.v1.EnrollmentService", "grpc.health.v1.Health"} <= services

        with pytest.raises(RemoteEnrollError):
            client.enroll(b"not an image", pb.EnrollOptions())
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        assert re.search(r'facecloak_errors_total\{reason="UNDECODABLE_IMAGE"\} 1\.0', text)
        assert 'facecloak_requests_total{code="OK",method="Describe"} 1.0' in text
        assert "facecloak_queue_waiting 0.0" in text and "facecloak_ready 1.0" in text


def test_config_precedence_file_env_flags(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text('port = 7000\nworkers = 2\nmodels = ["sface"]\nqueue_depth = 3\n')
    env = {"FACECLOAK_SERVER_WORKERS": "3", "FACECLOAK_SERVER_API_KEYS": "app:" + "s" * 20, "UNRELATED": "1"}
    config = load_config(["--config", str(path), "--queue-depth", "5"], env)
    assert (config.port, config.workers, config.queue_depth, config.models) == (7000, 3, 5, ("sface",))
    assert config.api_keys == ("app:" + "s" * 20,)
    path.write_text("bf16_surrogates = true\n")
    assert load_config(["--config", str(path)], {}).bf16_surrogates
    assert not load_config(["--config", str(path)], {"FACECLOAK_SERVER_BF16_SURROGATES": "off"}).bf16_surrogates
    assert load_config(["--bf16-surrogates", "yes"], {}).bf16_surrogates and not load_config([], {}).bf16_surrogates


def test_precision_settings_become_every_enrollment_s_defaults():
    from facecloak.server.app import FaceCloakServer
    from facecloak.server.config import ServerConfig

    server = FaceCloakServer(ServerConfig(models=("sface",), bf16_convolutions=True))
    assert server.defaults.pgd.bf16_convolutions is True and not server.defaults.pgd.bf16_surrogates
    assert FaceCloakServer(ServerConfig(models=("sface",), bf16_convolutions=False)).defaults.pgd.bf16_convolutions is False
    assert FaceCloakServer(ServerConfig(models=("sface",))).defaults.pgd.bf16_convolutions is None  # the hardware decides


def test_bf16_convolutions_setting_takes_auto():
    from facecloak.server.config import load_config

    assert load_config(["--bf16-convolutions", "off"], {}).bf16_convolutions is False
    assert load_config([], {"FACECLOAK_SERVER_BF16_CONVOLUTIONS": "on"}).bf16_convolutions is True
    assert load_config(["--bf16-convolutions", "auto"], {}).bf16_convolutions is None
    with pytest.raises(BadOptionError, match="expected true, false or auto"):
        load_config(["--bf16-convolutions", "maybe"], {})
    with pytest.raises(BadOptionError, match="expected true or false"):  # auto only where the core has a default
        load_config(["--bf16-surrogates", "auto"], {})


def test_describe_says_which_convolution_precision_the_backend_runs(monkeypatch):
    from facecloak.optimise import PGDConfig
    from facecloak.optimise.precision import precision_note

    assert precision_note(PGDConfig(bf16_convolutions=False), "aot-cpu") == "surrogates in float32"
    assert precision_note(PGDConfig(bf16_convolutions=True), "aot-cpu") == "surrogates in float32, convolutions on bfloat16 arithmetic"
    assert precision_note(PGDConfig(bf16_surrogates=True, bf16_convolutions=True), "ort-cpu") == "surrogates in bfloat16"
    for units in (True, False):
        monkeypatch.setattr("facecloak.optimise.precision.native_bf16", lambda: units)
        assert precision_note(PGDConfig(), "torch-cpu") == "surrogates in float32" + (
            ", convolutions on bfloat16 arithmetic (this CPU has bfloat16 units)" if units else "")


@pytest.mark.parametrize("argv, env, message", [
    (["--port", "70000"], {}, "port"),
    (["--workers", "two"], {}, "workers"),
    (["--backend", "openvino"], {}, "not available"),
    (["--bf16-surrogates", "maybe"], {}, "bf16_surrogates: 'maybe' .expected true or false"),
    (["--models", "sface,nope"], {}, "nope"),
    (["--tls-cert", __file__], {}, "both tls_cert and tls_key"),
    ([], {"FACECLOAK_SERVER_NO_SUCH_SETTING": "1"}, "no_such_setting"),
])
def test_bad_config_is_refused_clearly(argv, env, message):
    with pytest.raises(BadOptionError, match=message):
        load_config(argv, env)


def test_api_keys_are_not_accepted_as_flags(capsys):
    with pytest.raises(SystemExit):
        load_config(["--api-keys", "app:" + "s" * 20], {})
    assert server_main(["--port", "-1"]) == 2 and "port" in capsys.readouterr().err


def test_grpc_core_lines_never_break_the_json_log():
    """gRPC's C core prints plain text to stderr (here: a port already taken); the server's stderr stays
    JSON lines, apart from the command's one documented error line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
        done = subprocess.run([str(Path(sys.executable).with_name("facecloak-server")), "--port",
                               str(taken.getsockname()[1]), "--models", "sface"],
                              capture_output=True, text=True, timeout=120, env=env)
    *lines, last = done.stderr.strip().splitlines()
    assert done.returncode == 1 and last.startswith("facecloak-server: error [START_FAILED]")
    for line in lines:
        json.loads(line)

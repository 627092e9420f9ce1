"""End to end: the real server on 127.0.0.1, the real client and CLI, a real LFW photo, the mask applied."""

from __future__ import annotations

import numpy as np
import pytest

from facecloak import cli
from facecloak.apply import apply_mask, measure_quality
from facecloak.faces import FaceDetector
from facecloak.imageio import read_image
from facecloak.mask import decode_mask
from .test_server_helpers import TINY, client_for, lfw_bytes, lfw_path, options, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with running_server(models=("sface", "facenet")) as srv:
        yield srv


def test_cli_remote_mask_equals_local_cli_and_applies(server, tmp_path, monkeypatch):
    for var in ("FACECLOAK_API_KEY", "FACECLOAK_TLS_CA", "FACECLOAK_TLS_CERT", "FACECLOAK_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    photo = str(lfw_path("Tony_Blair", 1))
    flags = ["--surrogates", "sface,facenet", "--views", "2", "--iterations", "2", "--seed", "7"]
    remote, local = tmp_path / "remote.fcmask", tmp_path / "local.fcmask"
    assert cli.main(["enroll", photo, "-o", str(remote), *flags, "--server", f"127.0.0.1:{server.port}"]) == 0
    assert cli.main(["enroll", photo, "-o", str(local), *flags]) == 0
    assert remote.read_bytes() == local.read_bytes()

    mask = decode_mask(remote.read_bytes())
    assert mask.models == ("sface", "facenet") and np.abs(mask.delta).max() > 0
    original = read_image(lfw_path("Tony_Blair", 2))
    cloaked = apply_mask(original, mask, FaceDetector())
    changed = np.abs(cloaked.astype(int) - original.astype(int))
    assert cloaked.shape == original.shape and changed.max() > 0
    assert changed.max() <= 32 + 2  # eps_A grey levels plus rounding of the warp and the stored quantum
    assert measure_quality(original, cloaked).ssim > 0.8


def test_result_fields_progress_and_mask_set(server):
    stages = []
    with client_for(server) as client:
        reply = client.enroll(lfw_bytes("Hu_Jintao", 1), options(TINY, check_views=1, mask_count=2, seed=3),
                              progress=lambda stage, fraction: stages.append((stage, fraction)))
    result = reply.result
    assert [m.seed for m in result.masks] == [3, 4]
    assert reply.masks[0] != reply.masks[1]  # a diverse set, not one mask twice
    assert all(decode_mask(m).frame.size == 112 for m in reply.masks)
    assert len(result.face.landmarks) == 5 and result.face.width > 32 and 0 < result.face.score <= 1
    assert [c.model for c in result.masks[0].self_check] == ["sface"]
    seen = result.masks[0].visibility  # the mask on the uploaded photo itself, face box and whole photo
    assert result.masks[0].HasField("visibility") and 0 < seen.flip_mean < seen.flip_p99 <= 1 and seen.face_ssim < seen.ssim < 1
    assert {t.stage for t in result.masks[0].timings} >= {"detect", "views", "anchors", "optimise", "self_check"}
    assert result.request_id == reply.request_id
    assert stages[0] == ("queued", 0.0) and ("optimise", 1.0) in stages and stages[-1] == ("self_check", 1.0)


def test_a_perceptual_budget_travels_to_the_server_and_back_in_the_mask(server, tmp_path, monkeypatch):
    for var in ("FACECLOAK_API_KEY", "FACECLOAK_TLS_CA", "FACECLOAK_TLS_CERT", "FACECLOAK_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    photo = str(lfw_path("Tony_Blair", 1))
    flags = ["--surrogates", "sface", "--views", "1", "--iterations", "1", "--eps-focus", "24", "--perceptual"]
    remote, local = tmp_path / "remote.fcmask", tmp_path / "local.fcmask"
    assert cli.main(["enroll", photo, "-o", str(remote), *flags, "--server", f"127.0.0.1:{server.port}"]) == 0
    assert cli.main(["enroll", photo, "-o", str(local), *flags]) == 0
    assert remote.read_bytes() == local.read_bytes()
    mask = decode_mask(remote.read_bytes())
    assert mask.perceptual is not None and mask.perceptual.eps * 255 == pytest.approx(24, abs=1e-4)
    with client_for(server) as client, pytest.raises(Exception, match="perceptual floor must be in"):
        bad = options(TINY)
        bad.perceptual.eps, bad.perceptual.floor, bad.perceptual.contrast = 24.0, 1.5, 0.06
        client.enroll(lfw_bytes("Tony_Blair", 1), bad)

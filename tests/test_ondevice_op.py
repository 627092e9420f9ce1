"""The on-device op (torch and exported ONNX) against the server's apply on real LFW photos, and bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from facecloak.apply import apply_mask_with_landmarks
from facecloak.export.ondevice import MAX_MODEL_BYTES
from facecloak.clients.ondevice_onnx import export_onnx
from facecloak.clients.ondevice_op import AddAndClip, OpConfig
from facecloak.clients.ondevice_reference import (
    LandmarkError, cloak_frame, load_device_mask, plan_roi, similarity_closed_form,
)
from facecloak.clients.ondevice_verify import (
    Case, compare, compare_to_torch, lfw_cases, onnx_runner, random_mask_bytes, torch_runner,
)
from facecloak.errors import MaskFormatError
from facecloak.faces import estimate_similarity
from facecloak.mask import decode_mask, encode_mask


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return lfw_cases(4)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return export_onnx(tmp_path_factory.mktemp("ondevice") / "op.onnx")


@pytest.fixture(scope="module")
def real_mask(cases) -> bytes:
    """A real (fast) enrollment of the first person; applied to their other photos below."""
    from facecloak.enroll import EnrollConfig, Enroller
    from facecloak.optimise import PGDConfig

    config = EnrollConfig(surrogates=("sface",), views=2, pgd=replace(PGDConfig(), iterations=2))
    return encode_mask(Enroller().enroll(cases[0].photo, config).mask)


def test_onnx_model_is_small_and_typed(onnx_path):
    import onnx

    model = onnx.load(str(onnx_path))
    assert onnx_path.stat().st_size <= MAX_MODEL_BYTES
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types == {"roi": onnx.TensorProto.UINT8, "mask": onnx.TensorProto.FLOAT, "matrix": onnx.TensorProto.FLOAT}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("scale", [1.0, 1.25])
def test_torch_and_onnx_match_server_with_random_masks(cases, onnx_path, scale):
    runners = {"torch": torch_runner(), "torch-gather": torch_runner(sampler="gather"), "onnx": onnx_runner(onnx_path)}
    for seed, case in enumerate(cases):
        mask = random_mask_bytes(seed, amplitude_levels=16, scale=scale)
        for name, runner in runners.items():
            assert compare(runner, mask, case) <= 1, (name, case.name)
        assert compare_to_torch(runners["onnx"], mask, case) <= 1


def test_real_mask_on_other_photos_of_the_person(cases, onnx_path, real_mask):
    from facecloak.faces import FaceDetector
    from facecloak.faces.detect import detect_largest_face
    from facecloak.assets import asset
    from facecloak.imageio import read_image

    person = asset("faces/lfw") / cases[0].name.rsplit("_", 1)[0]
    detector = FaceDetector()
    runner = onnx_runner(onnx_path)
    for path in sorted(person.glob("*.jpg"))[:3]:
        photo = read_image(path)
        case = Case(path.name, photo, detect_largest_face(detector, photo).landmarks)
        assert compare(runner, real_mask, case) <= 1
        # The mask really changes the photo (a broken warp adding zeros would pass the agreement check).
        cloaked, applied = cloak_frame(photo, load_device_mask(real_mask, 112), case.landmarks, runner)
        assert applied and np.abs(cloaked.astype(int) - photo).max() >= 8


def test_closed_form_similarity_equals_umeyama(cases):
    points = decode_mask(random_mask_bytes(0)).frame.points()
    rng = np.random.default_rng(3)
    for case in cases:
        noisy = case.landmarks + rng.normal(0, 2.0, size=(5, 2))
        np.testing.assert_allclose(similarity_closed_form(noisy, points), estimate_similarity(noisy, points), atol=1e-9)


def test_face_partly_outside_the_frame(cases, onnx_path):
    case = cases[1]
    cut = np.ascontiguousarray(case.photo[:, 110:])  # the left half of the face is cut off
    shifted = Case(case.name, cut, case.landmarks - np.array([110.0, 0.0]))
    mask = random_mask_bytes(7)
    assert compare(onnx_runner(onnx_path), mask, shifted) <= 1
    plan = plan_roi(load_device_mask(mask, 112), shifted.landmarks, cut.shape[:2])
    assert plan is not None and plan.box[0] == 0


def test_face_wholly_outside_leaves_the_frame_unchanged(cases):
    case = cases[0]
    far = case.landmarks + 5000.0
    mask = random_mask_bytes(1)
    out, applied = cloak_frame(case.photo, load_device_mask(mask, 112), far, torch_runner())
    assert not applied and np.array_equal(out, case.photo)
    assert np.array_equal(out, apply_mask_with_landmarks(case.photo, decode_mask(mask), far))


@pytest.mark.parametrize("landmarks, message", [
    (np.full((5, 2), np.nan), "NaN"),
    (np.full((5, 2), 40.0), "degenerate"),
    (np.zeros((4, 2)), r"need 5 \(x, y\) landmarks"),
])
def test_bad_landmarks_are_rejected(cases, landmarks, message):
    mask = load_device_mask(random_mask_bytes(0), 112)
    with pytest.raises(LandmarkError, match=message):
        cloak_frame(cases[0].photo, mask, landmarks, torch_runner())


def test_bad_masks_are_rejected():
    data = bytearray(random_mask_bytes(0))
    wrong_version = bytes(data[:4]) + (3).to_bytes(2, "little") + bytes(data[6:])
    with pytest.raises(MaskFormatError, match="version 3"):
        load_device_mask(wrong_version, 112)
    with pytest.raises(MaskFormatError, match="exported for 112 px"):
        load_device_mask(random_mask_bytes(0, size=96), 112)
    with pytest.raises(MaskFormatError, match="truncated"):
        load_device_mask(bytes(data[:-10]), 112)
    data[-1] ^= 0xFF
    with pytest.raises(MaskFormatError, match="checksum"):
        load_device_mask(bytes(data), 112)


@pytest.mark.parametrize("io_dtype, sampler", [("uint8", "grid_sample"), ("float32", "grid_sample"), ("uint8", "gather")])
def test_op_output_stays_in_range_for_garbage_inputs(io_dtype, sampler):
    op = AddAndClip(OpConfig(io_dtype=io_dtype, sampler=sampler))
    rng = np.random.default_rng(0)
    roi = torch.from_numpy(rng.integers(0, 256, (1, 40, 50, 3)).astype(np.uint8 if io_dtype == "uint8" else np.float32))
    nan_mask = torch.full((112, 112, 3), float("nan"))
    huge_mask = torch.full((112, 112, 3), 1e30)
    good_matrix = torch.tensor([[1.0, 0.0, 30.0], [0.0, 1.0, 30.0]])
    for mask, matrix in [(nan_mask, good_matrix), (huge_mask, good_matrix), (-huge_mask, good_matrix),
                         (huge_mask, torch.full((2, 3), float("nan"))), (huge_mask, torch.full((2, 3), float("inf")))]:
        out = op(roi, mask, matrix).to(torch.float32)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
    # NaN mask adds nothing; a NaN transform samples outside the mask and adds nothing.
    assert torch.equal(op(roi, nan_mask, good_matrix), roi)
    assert torch.equal(op(roi, huge_mask, torch.full((2, 3), float("nan"))), roi)


def test_onnx_graph_ends_in_one_fused_quantize(onnx_path):
    import onnx

    ops = [node.op_type for node in onnx.load(str(onnx_path)).graph.node]
    assert ops[-1] == "QuantizeLinear" and "Round" not in ops and "GridSample" in ops


def test_tiled_execution_matches_server(cases, onnx_path):
    """The host tiling used for the fixed-size TFLite model, checked here on the ONNX model (any tile)."""
    runner = onnx_runner(onnx_path)
    mask = random_mask_bytes(5, amplitude_levels=16)
    for case in cases[:2]:
        assert compare(runner, mask, case, tile=96) <= 1

"""The on-device op (torch and exported ONNX) against the server's apply on real LFW photos, and bad input.

Masks of format 2 (no perceptual budget: the op's clip is a no-op) and format 3 (the op clips the mask
to the budget the photo allows, computed in the mask's frame) are both checked.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from facecloak.apply import apply_mask_with_landmarks
from facecloak.export.ondevice import MAX_MODEL_BYTES
from facecloak.clients.ondevice_onnx import export_onnx
from facecloak.clients.ondevice_op import LUMA, NO_BUDGET, AddAndClip, CloakOp, OpConfig, sample_frame, window_size
from facecloak.clients.ondevice_reference import (
    LandmarkError, cloak_frame, load_device_mask, plan_roi, similarity_closed_form,
)
from facecloak.clients.ondevice_verify import (
    TEST_BUDGET, Case, agreement, compare, compare_to_torch, lfw_cases, onnx_runner, random_mask_bytes, torch_runner,
    torch_tile_stages,
)
from facecloak.errors import MaskFormatError
from facecloak.faces import AlignedFrame, estimate_similarity
from facecloak.faces.align import warp_to_frame
from facecloak.mask import decode_mask, encode_mask
from facecloak.optimise import perceptual
from facecloak.optimise.perceptual import PerceptualBudget

BUDGETS = {"format 2": None, "format 3": TEST_BUDGET}


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


@pytest.fixture(scope="module")
def real_mask_v3(real_mask) -> bytes:
    """The same delta as a format-3 file carrying the default perceptual budget."""
    return encode_mask(replace(decode_mask(real_mask), perceptual=PerceptualBudget()))


def test_onnx_model_is_small_and_typed(onnx_path):
    import onnx

    model = onnx.load(str(onnx_path))
    assert onnx_path.stat().st_size <= MAX_MODEL_BYTES
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types == {"roi": onnx.TensorProto.UINT8, "mask": onnx.TensorProto.FLOAT, "matrix": onnx.TensorProto.FLOAT,
                     "budget": onnx.TensorProto.FLOAT}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
@pytest.mark.parametrize("scale", [1.0, 1.25])
def test_torch_and_onnx_match_server_with_random_masks(cases, onnx_path, scale, budget):
    runners = {"torch": torch_runner(), "torch-gather": torch_runner(sampler="gather"), "onnx": onnx_runner(onnx_path)}
    for seed, case in enumerate(cases):
        mask = random_mask_bytes(seed, amplitude_levels=32 if budget else 16, scale=scale, perceptual=budget)
        for name, runner in runners.items():
            result = agreement(runner, mask, case)
            # Max one level; and rarely even that (the frame sample and f32 budget sit on rounding edges).
            assert result.max_levels <= 1 and result.share < 0.005, (name, case.name, result)
        assert compare_to_torch(runners["onnx"], mask, case) <= 1


def test_frame_sample_is_the_servers_warp_to_frame(cases):
    """The in-graph frame sample (inverse matrix in closed form, bilinear, replicated border) is cv2's."""
    frame, differing = AlignedFrame(), 0
    mask = load_device_mask(random_mask_bytes(0), 112)
    for case in cases:
        plan = plan_roi(mask, case.landmarks, case.photo.shape[:2])
        x0, y0, x1, y1 = plan.box
        roi = torch.from_numpy(np.ascontiguousarray(case.photo[None, y0:y1, x0:x1]))
        extent = torch.tensor([x1 - x0, y1 - y0], dtype=torch.float32).reshape(2, 1, 1)
        sampled = sample_frame(roi, torch.from_numpy(plan.matrix), 0.0, extent, torch.zeros(112), 112)
        server = warp_to_frame(case.photo, estimate_similarity(case.landmarks, frame.points()), frame)
        diff = np.abs(np.floor(sampled.numpy().transpose(1, 2, 0) + 0.5) - server)
        assert diff.max() <= 1
        differing += np.count_nonzero(diff)
    assert differing <= 0.001 * len(cases) * 112 * 112 * 3


def test_window_matches_the_perceptual_rule():
    assert all(window_size(s) == perceptual.window_size(s) for s in range(8, 1025))
    assert perceptual.LUMA.tolist() == pytest.approx(list(LUMA))


def test_format_2_mask_applies_exactly_as_before(cases):
    """No budget (255, 1, 1): the fused op is the plain add-and-clip, bit for bit."""
    fused, plain = CloakOp().eval(), AddAndClip().eval()
    mask = load_device_mask(random_mask_bytes(3, amplitude_levels=32), 112)
    assert mask.budget.tolist() == list(NO_BUDGET)
    for case in cases:
        plan = plan_roi(mask, case.landmarks, case.photo.shape[:2])
        x0, y0, x1, y1 = plan.box
        roi = torch.from_numpy(np.ascontiguousarray(case.photo[None, y0:y1, x0:x1]))
        values, matrix = torch.from_numpy(mask.values), torch.from_numpy(plan.matrix)
        with torch.no_grad():
            assert torch.equal(fused(roi, values, matrix, torch.tensor(NO_BUDGET)), plain(roi, values, matrix))


def test_the_budget_clips_the_mask(cases, onnx_path):
    """The same delta, once as format 2 and once with a budget: the photo gets less where it is flat."""
    runner = onnx_runner(onnx_path)
    for seed, case in enumerate(cases):
        plain, budgeted = (random_mask_bytes(seed, amplitude_levels=32, perceptual=b) for b in (None, TEST_BUDGET))
        free = np.abs(cloak_frame(case.photo, load_device_mask(plain, 112), case.landmarks, runner)[0].astype(int) - case.photo)
        clipped = np.abs(cloak_frame(case.photo, load_device_mask(budgeted, 112), case.landmarks, runner)[0].astype(int)
                         - case.photo)
        assert free.max() >= 30 and clipped.max() <= round(TEST_BUDGET.eps * 255) + 1
        assert clipped.mean() < 0.8 * free.mean()
        assert compare(runner, budgeted, case) <= 1


@pytest.mark.parametrize("version", [2, 3])
def test_real_mask_on_other_photos_of_the_person(cases, onnx_path, real_mask, real_mask_v3, version):
    from facecloak.faces import FaceDetector
    from facecloak.faces.detect import detect_largest_face
    from facecloak.assets import asset
    from facecloak.imageio import read_image

    mask = real_mask if version == 2 else real_mask_v3
    person = asset("faces/lfw") / cases[0].name.rsplit("_", 1)[0]
    detector = FaceDetector()
    runner = onnx_runner(onnx_path)
    for path in sorted(person.glob("*.jpg"))[:3]:
        photo = read_image(path)
        case = Case(path.name, photo, detect_largest_face(detector, photo).landmarks)
        assert compare(runner, mask, case) <= 1
        # The mask really changes the photo (a broken warp adding zeros would pass the agreement check).
        cloaked, applied = cloak_frame(photo, load_device_mask(mask, 112), case.landmarks, runner)
        assert applied and np.abs(cloaked.astype(int) - photo).max() >= 8


def test_closed_form_similarity_equals_umeyama(cases):
    points = decode_mask(random_mask_bytes(0)).frame.points()
    rng = np.random.default_rng(3)
    for case in cases:
        noisy = case.landmarks + rng.normal(0, 2.0, size=(5, 2))
        np.testing.assert_allclose(similarity_closed_form(noisy, points), estimate_similarity(noisy, points), atol=1e-9)


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
def test_face_partly_outside_the_frame(cases, onnx_path, budget):
    """A clipped ROI: the frame sample replicates the photo's border there, as the server's warp does."""
    case = cases[1]
    cut = np.ascontiguousarray(case.photo[80:, 110:])  # the left half of the face and the forehead are cut off
    shifted = Case(case.name, cut, case.landmarks - np.array([110.0, 80.0]))
    mask = random_mask_bytes(7, amplitude_levels=32 if budget else 16, perceptual=budget)
    assert compare(onnx_runner(onnx_path), mask, shifted) <= 1
    assert compare(torch_tile_stages(64), mask, shifted) <= 1
    plan = plan_roi(load_device_mask(mask, 112), shifted.landmarks, cut.shape[:2])
    assert plan is not None and plan.box[:2] == (0, 0)


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
    wrong_version = bytes(data[:4]) + (9).to_bytes(2, "little") + bytes(data[6:])
    with pytest.raises(MaskFormatError, match="version 9"):
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
    op = CloakOp(OpConfig(io_dtype=io_dtype, sampler=sampler))
    rng = np.random.default_rng(0)
    roi = torch.from_numpy(rng.integers(0, 256, (1, 40, 50, 3)).astype(np.uint8 if io_dtype == "uint8" else np.float32))
    nan_mask = torch.full((112, 112, 3), float("nan"))
    huge_mask = torch.full((112, 112, 3), 1e30)
    good_matrix = torch.tensor([[1.0, 0.0, 30.0], [0.0, 1.0, 30.0]])
    nan, inf = float("nan"), float("inf")
    budgets = [torch.tensor(NO_BUDGET), torch.tensor([nan, nan, nan]), torch.tensor([inf, 0.0, 0.0]),
               torch.tensor([-inf, inf, -1.0]), torch.zeros(3)]
    singular = torch.zeros((2, 3))  # no inverse: the frame sample must still read inside the ROI
    for mask, matrix in [(nan_mask, good_matrix), (huge_mask, good_matrix), (-huge_mask, good_matrix),
                         (huge_mask, torch.full((2, 3), nan)), (huge_mask, torch.full((2, 3), inf)), (huge_mask, singular)]:
        for budget in budgets:
            out = op(roi, mask, matrix, budget).to(torch.float32)
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
    # NaN mask adds nothing; a NaN transform samples outside the mask and adds nothing; nor does a NaN budget.
    assert torch.equal(op(roi, nan_mask, good_matrix, budgets[0]), roi)
    assert torch.equal(op(roi, huge_mask, torch.full((2, 3), nan), budgets[0]), roi)
    assert torch.equal(op(roi, huge_mask, good_matrix, budgets[1]), roi)


def test_onnx_graph_ends_in_one_fused_quantize(onnx_path):
    import onnx

    ops = [node.op_type for node in onnx.load(str(onnx_path)).graph.node]
    assert ops[-1] == "QuantizeLinear" and "Round" not in ops and "GridSample" in ops


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
def test_tiled_execution_matches_server(cases, budget):
    """The TFLite model's three signatures (as the torch modules it is converted from) driven by the host
    tiling: per-tile frame samples summed, one budget clip, per-tile add-and-clip."""
    mask = random_mask_bytes(5, amplitude_levels=32 if budget else 16, perceptual=budget)
    for case in cases[:2]:
        stages = torch_tile_stages(96)
        assert compare(stages, mask, case) <= 1
        assert compare_to_torch(stages, mask, case) <= 1

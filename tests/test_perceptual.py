"""The perceptual budget (issue 13): rule, storage in the mask file, optimisation under it, application."""

from __future__ import annotations

import struct
import zlib
from dataclasses import astuple, replace

import numpy as np
import pytest
import torch

from facecloak.apply import apply_mask_with_landmarks
from facecloak.assets import assets_dir
from facecloak.enroll import EnrollConfig, Enroller
from facecloak.errors import MaskFormatError
from facecloak.faces import AlignedFrame, FaceDetector, detect_largest_face
from facecloak.imageio import read_image
from facecloak.mask import Mask, decode_mask, encode_mask
from facecloak.optimise import Budget
from facecloak.optimise.perceptual import PerceptualBudget, allowed_amplitude, face_support
from facecloak.optimise.torch_step import StepState, SurrogateTarget, pgd_step
from facecloak.optimise import PGDConfig

PHOTO = "faces/lfw/Tony_Blair/Tony_Blair_0001.jpg"
RULE = PerceptualBudget(eps=24 / 255, floor=0.25, contrast=0.06)


def test_flat_pixels_get_the_floor_and_texture_the_full_amplitude() -> None:
    size = 64
    flat = np.full((1, 3, size, size), 0.5, np.float32)
    checker = ((np.indices((size, size)).sum(0) % 2) * 0.6 + 0.2).astype(np.float32)
    textured = np.broadcast_to(checker, (1, 3, size, size)).copy()
    assert np.allclose(allowed_amplitude(flat, RULE), RULE.eps * RULE.floor, atol=1e-6)
    assert np.allclose(allowed_amplitude(textured, RULE), RULE.eps, atol=1e-6)
    half = flat.copy()
    half[..., size // 2 :] = textured[..., size // 2 :]
    allowed = allowed_amplitude(half, RULE)[0, 0]
    assert allowed[:, : size // 4].max() < allowed[:, -size // 4 :].min()


def test_face_support_covers_the_face_and_nothing_beside_it() -> None:
    frame = AlignedFrame()
    support = face_support(frame.points(), frame.size)
    nose = frame.points()[2].astype(int)
    assert support[nose[1], nose[0]] == 1.0
    assert support[0, 0] == 0.0 and support[frame.size // 2, 0] == 0.0 and support[frame.size // 2, -1] == 0.0
    assert 0.0 <= support.min() and support.max() <= 1.0


def _mask(perceptual: PerceptualBudget | None) -> Mask:
    rng = np.random.default_rng(0)
    delta = (rng.integers(-12, 13, (112, 112, 3)) * (2 / 255)).astype(np.float32)
    return Mask(delta=delta, frame=AlignedFrame(), models=("sface",), perceptual=perceptual)


def test_a_perceptual_mask_is_format_3_and_round_trips_its_rule() -> None:
    data = encode_mask(_mask(RULE))
    assert struct.unpack_from("<H", data, 4)[0] == 3
    back = decode_mask(data)
    assert astuple(back.perceptual) == pytest.approx(astuple(RULE))
    plain = encode_mask(_mask(None))
    assert struct.unpack_from("<H", plain, 4)[0] == 2 and decode_mask(plain).perceptual is None


def _with_crc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, 24, zlib.crc32(bytes(data[28:]), zlib.crc32(bytes(data[:24]))))
    return bytes(data)


@pytest.mark.parametrize(("offset", "fmt", "value", "reason"), [
    (0, "<B", 9, "unknown perceptual budget rule 9"),
    (1, "<f", 200 / 255, "perceptual budget is out of range"),
    (5, "<f", float("nan"), "perceptual budget is not finite"),
])
def test_a_bad_perceptual_block_is_refused_with_its_reason(offset: int, fmt: str, value: float, reason: str) -> None:
    data = bytearray(encode_mask(_mask(RULE)))
    names = data[28]
    struct.pack_into(fmt, data, 29 + names + offset, value)
    with pytest.raises(MaskFormatError, match=reason):
        decode_mask(_with_crc(data))


def test_apply_clips_the_delta_to_what_the_photo_allows() -> None:
    photo = read_image(assets_dir() / PHOTO)
    landmarks = detect_largest_face(FaceDetector(), photo).landmarks
    mask = _mask(RULE)
    plain = apply_mask_with_landmarks(photo, replace(mask, perceptual=None), landmarks).astype(np.int16) - photo
    perceptual = apply_mask_with_landmarks(photo, mask, landmarks).astype(np.int16) - photo
    # The stored delta reaches 24 grey levels; clipped to the photo's budget it is smaller on average
    # and never above the rule's peak (+1 for the bilinear warp's rounding).
    assert np.abs(perceptual).max() <= 24 + 1
    assert np.abs(perceptual).mean() < 0.8 * np.abs(plain).mean()


class _Linear(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x.flatten(1)[:, :16], dim=1)


def test_a_view_sees_only_what_its_own_bound_lets_through() -> None:
    s, n = 16, 2
    gen = torch.Generator().manual_seed(0)
    views = torch.rand(n, 3, s, s, generator=gen)
    bound = torch.full((3, s, s), 8 / 255)
    state = StepState(bound.clone(), torch.ones(s, s), torch.zeros(3, s, s))
    anchors = [torch.nn.functional.normalize(torch.randn(16, generator=gen), dim=0) for _ in range(3)]
    target = SurrogateTarget(_Linear(), *anchors)
    cfg = PGDConfig(diversity_prob=0.0)
    theta = torch.eye(2, 3).expand(n, 2, 3).contiguous()

    def loss(delta: torch.Tensor, view_bound: torch.Tensor) -> float:
        st = replace(state, delta=delta)
        return float(pgd_step(st, views, bound, bound / 4, view_bound, [target], cfg, theta, s)[1])

    closed = torch.zeros(n, 1, s, s)
    assert loss(bound.clone(), closed) == pytest.approx(loss(torch.zeros(3, s, s), closed), abs=1e-6)
    assert loss(bound.clone(), torch.full((n, 1, s, s), 1.0)) != pytest.approx(loss(torch.zeros(3, s, s), closed), abs=1e-4)


def test_budget_hands_each_view_its_bound() -> None:
    size = 8
    per_view = np.stack([np.full((1, size, size), v, np.float32) for v in (0.01, 0.02)])
    budget = Budget(np.full((size, size), 0.1, np.float32), 8 / 255, per_view)
    assert np.array_equal(budget.view_bound(2), per_view)
    assert np.all(Budget(budget.map, 8 / 255).view_bound(3) == np.float32(0.1))
    with pytest.raises(ValueError, match="per-view bounds for 2 views"):
        budget.view_bound(3)


def test_enrollment_with_a_perceptual_budget_stores_it_and_leaves_the_background_alone() -> None:
    photo = read_image(assets_dir() / PHOTO)
    base = EnrollConfig(surrogates=("sface",), views=2, check_views=1, perceptual=RULE)
    config = replace(base, pgd=replace(base.pgd, iterations=2))
    result = Enroller().enroll(photo, config)
    assert result.mask.perceptual == RULE
    beside = face_support(config.frame.points(), config.frame.size) == 0  # the template's; the photo's is close to it
    beside[20:-20, 20:-20] = False  # keep the frame's outer ring only, well away from any real face
    assert beside.sum() > 1000 and np.all(result.mask.delta[beside] == 0)
    assert np.abs(result.mask.delta).max() <= RULE.eps + 1e-6
    assert astuple(decode_mask(encode_mask(result.mask)).perceptual) == pytest.approx(astuple(RULE))
    assert result.self_check and result.visibility is not None

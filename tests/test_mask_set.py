"""Mask sets (issue 14): the version 4 container, the per-photo member rule, enrollment and apply."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from facecloak import cli
from facecloak.assets import assets_dir
from facecloak.enroll import EnrollConfig, Enroller
from facecloak.errors import BadOptionError, MaskFormatError
from facecloak.faces import AlignedFrame
from facecloak.imageio import read_image
from facecloak.mask import Mask, decode_mask, decode_mask_set, encode_mask, encode_mask_set, member_for_photo
from facecloak.mask.format import MAX_FILE_BYTES
from facecloak.optimise import PGDConfig

from .conftest import cloaked_sface_similarity

PHOTO = assets_dir() / "faces/lfw/Tony_Blair/Tony_Blair_0001.jpg"


def _masks(k: int, models: tuple[str, ...] = ("sface",)) -> tuple[Mask, ...]:
    rng = np.random.default_rng(k)
    return tuple(Mask(delta=(rng.integers(-3, 4, (112, 112, 3)) * (2 / 255)).astype(np.float32), frame=AlignedFrame(),
                      models=models) for _ in range(k))


def test_a_set_round_trips_every_member_in_a_version_4_file() -> None:
    masks = _masks(3)
    data = encode_mask_set(masks)
    assert data[:4] == b"FCMK" and struct.unpack_from("<HH", data, 4) == (4, 3)
    back = decode_mask_set(data)
    assert len(back) == 3
    for original, member in zip(masks, back):
        assert np.abs(member.delta - original.delta).max() <= 2 / 255 + 1e-6  # the writer may requantise to fit
    assert not np.array_equal(back[0].delta, back[1].delta)
    lengths, at = [], 12
    for _ in range(3):
        (length,) = struct.unpack_from("<I", data, at)
        lengths.append(length)
        at += 4 + length
    assert max(lengths) <= MAX_FILE_BYTES


def test_a_set_of_one_is_the_old_single_mask_file() -> None:
    (mask,) = _masks(1)
    assert encode_mask_set((mask,)) == encode_mask(mask)
    assert len(decode_mask_set(encode_mask(mask))) == 1


def _recrc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, 8, zlib.crc32(bytes(data[12:]), zlib.crc32(bytes(data[:8]))))
    return bytes(data)


def test_damaged_sets_are_refused_with_their_reason() -> None:
    data = bytearray(encode_mask_set(_masks(2)))
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(MaskFormatError, match="checksum"):
        decode_mask_set(bytes(flipped))
    with pytest.raises(MaskFormatError, match="truncated"):
        decode_mask_set(_recrc(bytearray(data[:-10])))
    too_many = bytearray(data)
    struct.pack_into("<H", too_many, 6, 17)
    with pytest.raises(MaskFormatError, match="claims 17 members"):
        decode_mask_set(_recrc(too_many))
    with pytest.raises(MaskFormatError, match="version 4 is not supported"):
        decode_mask(bytes(data))  # a single-mask reader refuses a set instead of misreading it
    mixed = _masks(1, ("sface",)) + _masks(1, ("facenet",))
    with pytest.raises(ValueError, match="share"):
        encode_mask_set(mixed)


def test_the_member_rule_is_deterministic_pinnable_and_covers_the_set() -> None:
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(200)]
    picks = [member_for_photo(p, 4) for p in photos]
    assert picks == [member_for_photo(p, 4) for p in photos]
    assert set(picks) == {0, 1, 2, 3} and min(np.bincount(picks)) > 25
    assert member_for_photo(photos[0], 4, member=2) == 2
    with pytest.raises(BadOptionError, match="member must be in 0..3"):
        member_for_photo(photos[0], 4, member=4)


def test_one_enrollment_learns_distinct_members_towards_distinct_anchors() -> None:
    config = EnrollConfig(surrogates=("sface",), views=3, check_views=1, members=3, pgd=PGDConfig(iterations=2))
    result = Enroller().enroll(read_image(PHOTO), config)
    assert len(result.masks) == 3 and result.mask is result.masks[0]
    assert len({a["sface"][0] for a in result.anchors}) == 3  # three different G+ identities
    assert all(not np.array_equal(a.delta, b.delta) for a, b in zip(result.masks, result.masks[1:]))
    with pytest.raises(BadOptionError, match="members must be in 1..16"):
        EnrollConfig(views=2, members=17).validate()


def test_the_separation_term_pushes_the_members_apart() -> None:
    """Same photo, anchors and draws: with the separation term the members' cloaked embeddings of a photo
    the set never saw are further apart than without it."""
    photo = read_image(PHOTO)
    other = read_image(assets_dir() / "faces/lfw/Tony_Blair/Tony_Blair_0003.jpg")
    similarity = {}
    for weight in (0.0, 10.0):
        config = EnrollConfig(surrogates=("sface",), views=4, check_views=0, members=3,
                              pgd=PGDConfig(iterations=6, member_separation=weight))
        similarity[weight] = cloaked_sface_similarity([other], [m.delta for m in Enroller().enroll(photo, config).masks])
    assert similarity[10.0] < similarity[0.0] - 0.05, similarity


def test_the_self_check_gives_each_held_out_view_one_member_in_turn() -> None:
    """View v carries member v mod K, as a photo carries one member: a member that does nothing leaves
    its views' similarity unchanged, however strong the other member is."""
    from facecloak.faces import FaceDetector, align_largest_face, to_chw_float
    from facecloak.models import numpy_torch_embedder

    crop = to_chw_float(align_largest_face(FaceDetector(), read_image(PHOTO), AlignedFrame()).crop)[0]
    held_out = np.stack([crop, crop[:, :, ::-1]]).astype(np.float32)  # the face and its mirror image
    strong = (np.random.default_rng(0).choice([-1, 1], crop.shape) * (24 / 255)).astype(np.float32)
    embed = numpy_torch_embedder("sface")
    user = embed(crop[None])[0]
    enroller = Enroller()
    [check] = enroller._self_check({"sface": user}, held_out, [strong, np.zeros_like(strong)], None)
    cloaked_first = np.clip(held_out[0] + strong, 0, 1).astype(np.float32)
    expected = float((embed(np.stack([cloaked_first, held_out[1]])) @ user).mean())
    assert check.after == pytest.approx(expected, abs=1e-4)
    assert check.before == pytest.approx(float((embed(held_out) @ user).mean()), abs=1e-4)
    assert check.after < check.before - 0.05  # the strong member did reach its view


def test_cli_writes_a_set_and_apply_rotates_or_pins_members(tmp_path) -> None:
    mask = tmp_path / "me.fcmask"
    flags = ["--surrogates", "sface", "--views", "2", "--iterations", "1", "--members", "2"]
    assert cli.main(["enroll", str(PHOTO), "-o", str(mask), *flags]) == 0
    assert len(decode_mask_set(mask.read_bytes())) == 2
    photo = assets_dir() / "faces/lfw/Tony_Blair/Tony_Blair_0002.jpg"
    outputs = {}
    for name, extra in (("auto", []), ("m0", ["--member", "0"]), ("m1", ["--member", "1"])):
        out = tmp_path / f"{name}.png"
        assert cli.main(["apply", str(mask), str(photo), "-o", str(out), *extra]) == 0
        outputs[name] = read_image(out)
    assert not np.array_equal(outputs["m0"], outputs["m1"])
    rule = member_for_photo(read_image(photo), 2)
    assert np.array_equal(outputs["auto"], outputs[f"m{rule}"])
    assert cli.main(["apply", str(mask), str(photo), "-o", str(tmp_path / "bad.png"), "--member", "2"]) == 2


def test_a_perceptual_set_carries_the_photo_dependent_budget_in_every_member() -> None:
    from facecloak.optimise.perceptual import PerceptualBudget

    config = EnrollConfig(surrogates=("sface",), views=4, check_views=0, members=2, perceptual=PerceptualBudget(),
                          pgd=PGDConfig(iterations=1))
    result = Enroller().enroll(read_image(PHOTO), config)
    assert len(result.masks) == 2 and all(m.perceptual == config.perceptual for m in result.masks)


def test_the_server_bounds_a_sets_step_by_members_times_views() -> None:
    from facecloak.proto import enrollment_pb2 as pb
    from facecloak.proto.convert import OptionLimits, configs_from_options

    limits = OptionLimits(models=EnrollConfig().surrogates, max_views=16)
    (config,) = configs_from_options(pb.EnrollOptions(members=4, views=4), EnrollConfig(), limits)
    assert (config.members, config.views) == (4, 4)
    with pytest.raises(BadOptionError, match="members x views must not exceed 16"):
        configs_from_options(pb.EnrollOptions(members=4, views=8), EnrollConfig(), limits)

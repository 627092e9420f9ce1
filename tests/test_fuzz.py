"""Property-based fuzzing (hypothesis) of everything that parses outside input: mask files, images, the API's
options, the command line. The property each time: a valid result or a documented error (a FaceCloakError
subclass, a documented exit code), never a traceback, and never more than a fixed memory ceiling.

CI runs a fixed, derandomised set of cases (well under a minute); ``FACECLOAK_FUZZ=long`` runs 50 times as
many, freshly random: ``FACECLOAK_FUZZ=long .venv/bin/python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from facecloak.cli import main as cli_main
from facecloak.enroll import EnrollConfig
from facecloak.errors import BadOptionError, FaceCloakError, ImageDecodeError, ImageTooLargeError, MaskFormatError
from facecloak.faces import FaceDetector, align_largest_face
from facecloak.imageio import ImageLimits, decode_image, probe_image
from facecloak.mask import decode_mask
from facecloak.mask.format import MAX_AMPLITUDE_GREY
from facecloak.proto import enrollment_pb2 as pb
from facecloak.proto.convert import OptionLimits, configs_from_options

from .test_server_helpers import faceless_png, lfw_bytes, lfw_path

DATA = Path(__file__).resolve().parent / "data"
LONG = os.environ.get("FACECLOAK_FUZZ") == "long"
settings.register_profile("facecloak-ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("facecloak-long", settings.get_profile("facecloak-ci"), derandomize=False)
PROFILE = settings.get_profile("facecloak-long" if LONG else "facecloak-ci")


def fuzz(examples: int) -> settings:
    """``examples`` cases in CI, 50 times as many with FACECLOAK_FUZZ=long."""
    return settings(PROFILE, max_examples=examples * (50 if LONG else 1))


# -- the memory ceiling ------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_rss_peak() -> bool:
    """Reset the process's resident peak (Linux: clear_refs 5), so it measures this block; False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def memory_ceiling(limit_bytes: int) -> Iterator[None]:
    """Fail if the block's peak exceeds ``limit_bytes``: traced Python/numpy allocations, and where Linux lets
    us reset it, the resident peak over the block's start (which also sees C allocations: Pillow, zlib)."""
    rss_measured = _reset_rss_peak()
    rss_before = _status_kib("VmRSS")
    tracemalloc.start()
    try:
        yield
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    resident = (_status_kib("VmHWM") - rss_before) * 1024 if rss_measured else 0
    assert max(traced, resident) <= limit_bytes, f"peak {max(traced, resident) / 2**20:.0f} MiB"


# -- mask files --------------------------------------------------------------------------------------------------
MASK_CEILING = 96 * 2**20  # the largest valid mask (1024 px) decodes to 12 MiB of float32
GOLDEN_MASK = (DATA / "mask_v2.fcmask").read_bytes()
GOLDEN_MASKS = (GOLDEN_MASK, (DATA / "mask_v1.fcmask").read_bytes())  # version 1 files have fewer checks
_CRC_AT = 24  # docs/mask-format.md: the CRC-32 field, the only bytes a version-2 CRC does not cover


def reseal(data: bytes) -> bytes:
    """Recompute the CRC as the spec defines it (version 1: of the payload; else of every other byte), so
    mutations reach the checks behind it."""
    if len(data) < _CRC_AT + 4:
        return data
    version, header_size = struct.unpack_from("<HH", data, 4)
    crc = zlib.crc32(data[header_size:]) if version == 1 else zlib.crc32(data[_CRC_AT + 4:], zlib.crc32(data[:_CRC_AT]))
    return data[:_CRC_AT] + struct.pack("<I", crc) + data[_CRC_AT + 4:]




def _bomb(size: int) -> bytes:
    """A zlib stream of ``size`` zero bytes (about a thousandth of that compressed)."""
    packer, block = zlib.compressobj(9), bytes(2**20)
    return b"".join([*(packer.compress(block) for _ in range(size // len(block))), packer.flush()])


# Replacement zlib payloads: a 256 MiB bomb (past the ceiling if ever inflated whole), an over-long stream,
# a short one, levels out of range (112 px).
PAYLOADS = [_bomb(256 * 2**20), *(zlib.compress(raw, 9) for raw in (b"\x7f" * 40_000, b"\x01\x02\x03", b"\x80" * 37_632))]
# Header fields (offset, struct format) a mutation may rewrite: version, header size, side, channels, template,
# scale, quantum, payload size, model-set length.
HEADER_FIELDS = [(4, "<H"), (6, "<H"), (8, "<H"), (10, "<B"), (11, "<B"), (12, "<f"), (16, "<f"), (20, "<I"), (28, "<B")]


@st.composite
def mutated_masks(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(GOLDEN_MASKS)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "field", "truncate", "insert", "payload", "payload", "version"]))
        if kind == "version" and len(data) >= 6:
            struct.pack_into("<H", data, 4, draw(st.sampled_from([1, 2, 3, 0xFFFF])))
        elif kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "field":
            offset, fmt = draw(st.sampled_from(HEADER_FIELDS))
            if fmt == "<f":
                value = draw(st.floats(width=32, allow_nan=True, allow_infinity=True))
            else:
                value = draw(st.integers(0, 2 ** (8 * struct.calcsize(fmt)) - 1))
            if len(data) >= offset + struct.calcsize(fmt):
                struct.pack_into(fmt, data, offset, value)
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            payload = draw(st.sampled_from(PAYLOADS))
            header = bytes(data[:29 + data[28]]) if len(data) >= 29 else bytes(data)
            data = bytearray(header + payload)
            if len(data) >= 24:
                struct.pack_into("<I", data, 20, len(payload))
    return reseal(bytes(data)) if draw(st.booleans()) else bytes(data)


def assert_mask_or_mask_error(data: bytes) -> None:
    with memory_ceiling(MASK_CEILING):
        try:
            mask = decode_mask(data)
        except MaskFormatError:
            return
    size = mask.frame.size
    assert mask.delta.shape == (size, size, 3) and mask.delta.dtype == np.float32
    assert np.all(np.isfinite(mask.delta))
    if struct.unpack_from("<H", data, 4)[0] >= 2:  # version 1 files are read with their own (older) checks
        assert np.abs(mask.delta).max(initial=0) <= (MAX_AMPLITUDE_GREY + 0.5 * mask.quantum * 255 + 1e-3) / 255


@fuzz(150)
@given(st.one_of(st.binary(max_size=2048), st.binary(max_size=2048).map(lambda b: b"FCMK" + b),
                 st.binary(max_size=2048).map(lambda b: reseal(b"FCMK\x02\x00" + b))))
def test_random_bytes_decode_to_a_mask_or_a_mask_error(data: bytes) -> None:
    assert_mask_or_mask_error(data)


@fuzz(200)
@given(mutated_masks())
def test_mutated_mask_files_decode_to_a_mask_or_a_mask_error(data: bytes) -> None:
    assert_mask_or_mask_error(data)


# -- images ------------------------------------------------------------------------------------------------------
LIMITS = ImageLimits(max_bytes=2 * 2**20, max_pixels=2_000_000)
# Pillow's buffer (4 bytes a pixel for RGB), our RGB copy and a converted mode at most: well under this.
IMAGE_CEILING = 160 * 2**20


def _encoded(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


_FACE = np.asarray(Image.open(lfw_path("Tony_Blair", 1)).convert("RGB"))
SEED_IMAGES = {"jpeg": lfw_bytes("Tony_Blair", 1), "png": _encoded(_FACE[::2, ::2], "PNG"),
               "webp": _encoded(_FACE[::2, ::2], "WEBP"), "gif": _encoded(_FACE[::4, ::4], "GIF")}


def _png_chunk_fixed(data: bytearray) -> bytearray:
    """Recompute the IHDR chunk's CRC so a rewritten size reaches the decoder instead of a CRC error."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 33:
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return data


def _sof_offset(data: bytes) -> int | None:
    """Offset of the height field of a JPEG's first SOF0/SOF2 segment."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0 and at + 9 <= len(data):
            return at + 5
    return None


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(sorted(SEED_IMAGES)))
    data = bytearray(SEED_IMAGES[kind])
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "truncate", "size", "splice"]))
        if action == "flip":
            for _ in range(draw(st.integers(1, 8))):
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del data[draw(st.integers(1, len(data))):]
        elif action == "splice":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=256))
        else:  # claim another size, up to absurd and 1-pixel-thin
            width, height = draw(st.integers(0, 2**16 - 1)), draw(st.integers(0, 2**16 - 1))
            if kind == "png" and len(data) >= 24:
                struct.pack_into(">II", data, 16, width, height)
                _png_chunk_fixed(data)
            elif kind == "jpeg" and (at := _sof_offset(bytes(data))) is not None:
                struct.pack_into(">HH", data, at, height, width)
        if not data:
            break
    return bytes(data)


def assert_image_or_image_error(data: bytes) -> np.ndarray | None:
    with memory_ceiling(IMAGE_CEILING):
        try:
            rgb = decode_image(data, LIMITS)
        except (ImageDecodeError, ImageTooLargeError):
            return None
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
    assert rgb.shape[0] * rgb.shape[1] <= LIMITS.max_pixels
    width, height = probe_image(data, LIMITS)  # what admission counted is what decoding produced
    assert width * height == rgb.shape[0] * rgb.shape[1]
    return rgb


@fuzz(120)
@given(mutated_images())
def test_mutated_real_images_decode_or_fail_with_a_documented_error(data: bytes) -> None:
    assert_image_or_image_error(data)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@fuzz(30)
@given(width=st.integers(1, 4000), height=st.integers(1, 4000), fmt=st.sampled_from(["PNG", "JPEG"]),
       grey=st.booleans())
def test_extreme_sizes_and_aspect_ratios_decode_and_detect_or_fail_cleanly(detector, width, height, fmt, grey) -> None:
    assume(width * height <= 3_000_000)  # a few just above the pixel limit, to be refused before decoding
    ramp = np.linspace(0, 255, width * height, dtype=np.float32).reshape(height, width)
    pixels = ramp.astype(np.uint8) if grey else np.stack([ramp, ramp[::-1], ramp.T.reshape(height, width)], -1).astype(np.uint8)
    rgb = assert_image_or_image_error(_encoded(pixels, fmt))
    if rgb is None:
        assert width * height > LIMITS.max_pixels
        return
    assert rgb.shape[:2] == (height, width)
    try:  # the next stage copes with any shape the decoder returns: a face or NO_FACE, not an OpenCV error
        align_largest_face(detector, rgb, EnrollConfig().frame)
    except FaceCloakError as exc:
        assert exc.reason in ("NO_FACE", "FACE_TOO_SMALL")


# -- the API's options -------------------------------------------------------------------------------------------
OPTION_LIMITS = OptionLimits(("sface", "facenet"))
_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_UINT32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2, 5, 6, 16, 17, 100, 101, 2**31, 2**32 - 1]))


@st.composite
def enroll_options(draw: st.DrawFn) -> pb.EnrollOptions:
    opts = pb.EnrollOptions()
    for name in ("eps", "eps_focus", "visibility_weight"):
        if draw(st.booleans()):
            setattr(opts, name, draw(st.one_of(_ANY_FLOAT, st.floats(0, 70))))
    for name in ("iterations", "views", "check_views", "seed", "mask_count", "members"):
        if draw(st.booleans()):
            setattr(opts, name, draw(_UINT32))
    if draw(st.booleans()):
        opts.budget_preset = draw(st.integers(-(2**31), 2**31 - 1))
    names = st.one_of(st.sampled_from(["sface", "facenet", "", "SFACE", "arcface"]), st.text(max_size=40))
    opts.surrogates.extend(draw(st.lists(names, max_size=5)))
    return opts


@fuzz(200)
@given(enroll_options())
def test_any_options_become_valid_configs_or_a_bad_option(opts: pb.EnrollOptions) -> None:
    with memory_ceiling(16 * 2**20):
        try:
            configs = configs_from_options(pb.EnrollOptions.FromString(opts.SerializeToString()), EnrollConfig(),
                                           OPTION_LIMITS)
        except BadOptionError:
            return
    assert 1 <= len(configs) <= OPTION_LIMITS.max_masks
    for i, config in enumerate(configs):
        config.validate()
        assert set(config.surrogates) <= set(OPTION_LIMITS.models) and config.seed == configs[0].seed + i
        assert 1 <= config.views <= OPTION_LIMITS.max_views and 1 <= config.pgd.iterations <= OPTION_LIMITS.max_iterations
        assert 0 <= config.pgd.visibility_weight <= 100
        assert config.members == 1 or config.members * config.views <= OPTION_LIMITS.max_views  # a set's step cost


# -- the command line --------------------------------------------------------------------------------------------
CLI_CODES = {0, 2, 3, 4, 5, 6, 7, 8, 12, 13}  # README's exit-code table (9, 10: server and Arc2Face, not reached)
_NUMBERS = st.sampled_from(["0", "1", "2", "-1", "3", "100", "101", "1e9", "nan", "inf", "-inf", "8.5", "x", "",
                            "4294967295", "4294967296", "99999999999999999999"])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    out = {"face": lfw_path("Tony_Blair", 2), "missing": root / "missing.jpg", "folder": root, "mask": DATA / "mask_v2.fcmask",
           "mask_v1": DATA / "mask_v1.fcmask"}
    for name, data in (("faceless", faceless_png()), ("corrupt", SEED_IMAGES["jpeg"][:900]),
                       ("bad_mask", GOLDEN_MASK[:-9]), ("empty", b"")):
        (root / name).write_bytes(data)
        out[name] = root / name
    return out


@st.composite
def cli_arguments(draw: st.DrawFn, files: dict[str, Path]) -> list[str]:
    folder = files["folder"]
    outputs = [str(folder / "out.fcmask"), str(folder / "out.png"), str(folder / "out.jpg"), str(folder / "out.bmp"),
               str(folder / "no" / "such" / "out.png"), str(folder), str(files["faceless"])]
    verb = draw(st.sampled_from(["enroll", "apply", "gallery", "bogus"]))
    if verb == "enroll":
        # Never a face here: an enrollment would take seconds; faces are fuzzed through `apply`.
        photo = draw(st.sampled_from(["faceless", "corrupt", "missing", "folder", "empty"]))
        argv = ["enroll", str(files[photo]), "-o", draw(st.sampled_from(outputs)), "--backend", "torch-cpu"]
        for flag in draw(st.lists(st.sampled_from(["--views", "--iterations", "--eps", "--eps-focus", "--seed"]),
                                  max_size=4, unique=True)):
            argv += [flag, draw(_NUMBERS)]
        if draw(st.booleans()):
            argv += ["--surrogates", draw(st.sampled_from(["sface", "sface,facenet", "sface,sface", "nope", ",", ""]))]
    elif verb == "apply":
        mask = draw(st.sampled_from(["mask", "mask_v1", "bad_mask", "missing", "face", "empty"]))
        photo = draw(st.sampled_from(["face", "faceless", "corrupt", "missing", "mask"]))
        argv = ["apply", str(files[mask]), str(files[photo]), "-o", draw(st.sampled_from(outputs))]
        if draw(st.booleans()):
            argv += ["--jpeg-quality", draw(_NUMBERS)]
    elif verb == "gallery":
        argv = ["gallery", "build", str(files[draw(st.sampled_from(["missing", "faceless"]))]), "-o", str(folder / "g.npz")]
    else:
        argv = [draw(st.sampled_from(["bogus", "", "--nope", "-o"]))]
    if draw(st.booleans()):
        argv.append("--overwrite")
    return argv


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return code, err.getvalue()


def test_cli_argument_combinations_exit_with_a_documented_code(files) -> None:
    run_cli(["apply", str(files["mask"]), str(files["face"]), "-o", str(files["folder"] / "warm.png")])  # load once

    @fuzz(25)
    @given(cli_arguments(files))
    def check(argv: list[str]) -> None:
        with memory_ceiling(512 * 2**20):
            code, err = run_cli(argv)
        assert code in CLI_CODES, (code, err)
        if code != 0:
            last = err.strip().splitlines()[-1]
            assert last.startswith(("facecloak: error [", "usage:", "facecloak")) and "Traceback" not in err, err

    check()

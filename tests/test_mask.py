import hashlib
import re
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from facecloak.errors import MaskFormatError
from facecloak.faces import AlignedFrame
from facecloak.mask import Mask, decode_mask, encode_mask, read_mask
from facecloak.mask.format import MAX_READ_BYTES, VERSION

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).parents[1] / "docs" / "mask-format.md"
# Written independently of the reader, from docs/mask-format.md: offset and struct code of each header field.
FIELDS = {"version": (4, "<H"), "header_size": (6, "<H"), "side": (8, "<H"), "channels": (10, "<B"),
          "template": (11, "<B"), "scale": (12, "<f"), "quantum": (16, "<f"), "payload_size": (20, "<I"),
          "crc": (24, "<I"), "n": (28, "<B")}


def _mask(seed=0, size=112):
    rng = np.random.default_rng(seed)
    delta = rng.integers(-16, 17, (size, size, 3)).astype(np.float32) * (2 / 255)
    return Mask(delta=delta, frame=AlignedFrame(size=size), models=("sface", "facenet"))


def _get(data: bytes, field: str):
    offset, code = FIELDS[field]
    return struct.unpack_from(code, data, offset)[0]


def _signed(data: bytes) -> bytes:
    """``data`` with its version-2 CRC recomputed, per the spec: CRC-32 of all bytes but [24, 28)."""
    return data[:24] + struct.pack("<I", zlib.crc32(data[:24] + data[28:])) + data[28:]


def _with(data: bytes, **fields) -> bytes:
    """A validly signed version-2 file with header ``fields`` replaced."""
    out = bytearray(data)
    for field, value in fields.items():
        offset, code = FIELDS[field]
        struct.pack_into(code, out, offset, value)
    return _signed(bytes(out))


def _with_payload(data: bytes, payload: bytes) -> bytes:
    header = data[:_get(data, "header_size")]
    return _with(header + payload, payload_size=len(payload))


def _with_levels(data: bytes, levels: np.ndarray) -> bytes:
    return _with_payload(data, zlib.compress(levels.astype(np.int8).tobytes(), 9))


# -- the committed golden files (a real enrollment: lfw/Abdullah_Gul_0001.jpg, sface, 2 views x 2 steps) --

GOLDEN_LEVELS_SHA256 = "4e8d569568f12c719ffbfe3f58422f32ee344b65b16266b5c04345a09787bcde"


def _check_golden(mask: Mask) -> None:
    levels = np.round(mask.delta / mask.quantum).astype(np.int8)
    assert mask.frame == AlignedFrame(size=112, scale=1.0, template="arcface5") and mask.models == ("sface",)
    assert mask.quantum == pytest.approx(2 / 255, rel=1e-6)
    assert hashlib.sha256(levels.tobytes()).hexdigest() == GOLDEN_LEVELS_SHA256
    assert levels[0, 0].tolist() == [0, 0, 0] and levels[56, 56].tolist() == [-6, -10, -10]
    assert (levels.min(), levels.max(), int(np.abs(levels.astype(int)).sum())) == (-10, 10, 121605)


def test_golden_version_2_file_decodes_to_known_values_and_is_rewritten_byte_for_byte():
    data = (DATA / "mask_v2.fcmask").read_bytes()
    assert len(data) == 14488
    assert [_get(data, f) for f in FIELDS] == [2, 34, 112, 3, 1, 1.0, np.float32(2 / 255), 14454, 0xBAF4C560, 5]
    mask = decode_mask(data)
    _check_golden(mask)
    assert encode_mask(mask) == data


def test_golden_version_1_file_still_reads_with_its_old_checks():
    data = (DATA / "mask_v1.fcmask").read_bytes()
    assert _get(data, "version") == 1 and _get(data, "crc") == zlib.crc32(data[34:])  # v1: payload-only CRC
    _check_golden(decode_mask(data))
    # Version 1's header was not checksummed and its quantum bound was loose: such files still read.
    unsigned = bytearray(data)
    unsigned[14] ^= 0x10
    assert decode_mask(bytes(unsigned)).frame.scale == 1.125
    assert decode_mask(data[:16] + struct.pack("<f", 1.0) + data[20:]).quantum == 1.0
    # ... which version 2 refuses.
    v2 = (DATA / "mask_v2.fcmask").read_bytes()
    with pytest.raises(MaskFormatError, match="quantum 255 grey levels is out of range"):
        decode_mask(_with(v2, quantum=1.0))


def test_the_spec_worked_example_is_the_golden_file():
    dump = re.search(r"```\n(00000000 .*?)```", DOCS.read_text(), re.S).group(1)
    example = bytes.fromhex("".join(line[10:58] for line in dump.strip().splitlines()))
    data = (DATA / "mask_v2.fcmask").read_bytes()
    assert len(example) == 64 and example == data[:64]
    text = " ".join(DOCS.read_text().split())
    assert f"{len(data):,} bytes" in text and "`0xBAF4C560`" in text and "levels `(-6, -10, -10)`" in text
    assert f"`0x{zlib.crc32(data[34:]):08X}` covers the payload only" in text  # the version-1 golden's CRC


# -- writer --


def test_round_trip_is_exact_on_the_level_grid():
    mask = _mask()
    back = decode_mask(encode_mask(mask, max_bytes=None))
    assert np.allclose(back.delta, mask.delta, atol=1e-6)
    assert back.frame == mask.frame and back.models == ("sface", "facenet")
    assert encode_mask(back, max_bytes=None) == encode_mask(mask, max_bytes=None)  # deterministic bytes


def test_header_fields():
    data = encode_mask(_mask())
    magic, version, header_size, size = struct.unpack_from("<4sHHH", data)
    assert (magic, version, size) == (b"FCMK", VERSION, 112) and VERSION == 2
    assert header_size == 29 + len("sface,facenet")
    assert _signed(data) == data  # the CRC covers the whole file but its own 4 bytes


@pytest.mark.parametrize("change, message", [
    (dict(quantum=1.0), "quantum"), (dict(quantum=0.1 / 255), "quantum"), (dict(scale=5.0), "scale"),
    (dict(size=4), "side"), (dict(template="mystery"), "template"), (dict(amplitude=70), "amplitude"),
])
def test_the_writer_refuses_what_the_reader_refuses(change, message):
    size = change.get("size", 16)
    frame = AlignedFrame(size=size, scale=change.get("scale", 1.0), template=change.get("template", "arcface5"))
    delta = np.full((size, size, 3), change.get("amplitude", 8) / 255, np.float32)
    mask = Mask(delta=delta, frame=frame, models=("sface",), quantum=change.get("quantum", 2 / 255))
    with pytest.raises(ValueError, match=message):
        encode_mask(mask, max_bytes=None)


def test_noise_like_masks_are_requantised_to_fit_16_kib():
    rng = np.random.default_rng(1)
    # Unoptimised noise: uniform within 8 grey levels, 32 on a sticker-sized block.
    budget = np.full((112, 112, 1), 8.0)
    budget[40:60, 30:80] = 32.0
    delta = (rng.uniform(-1, 1, (112, 112, 3)) * budget).astype(np.float32) / 255
    assert len(encode_mask(mask := Mask(delta=delta, frame=AlignedFrame(), models=("sface",)), max_bytes=None)) > 16 * 1024
    data = encode_mask(mask)
    assert len(data) <= 16 * 1024
    back = decode_mask(data)
    assert back.quantum > mask.quantum
    assert np.abs(back.delta - delta).max() <= back.quantum / 2 + 1e-6
    assert np.abs(back.delta - delta).max() <= 2 / 255 + 1e-6  # never more than two grey levels off


# -- reader: every rejection --

GOLDEN = (DATA / "mask_v2.fcmask").read_bytes()
RAW = 112 * 112 * 3
ZEROS = np.zeros((112, 112, 3), np.int8)


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d[:28], "too short"),
    (lambda d: b"GIF8" + d[4:], "bad magic"),
    (lambda d: _with(d, version=9), "version 9 is not supported"),
    (lambda d: _with(d, version=0), "version 0 is not supported"),
    (lambda d: _with(d, header_size=35), "header is corrupted"),
    (lambda d: _with(d, channels=4), "header is corrupted"),
    (lambda d: d[:-5], "truncated or padded"),
    (lambda d: d + b"\0", "truncated or padded"),
    (lambda d: _with(d, payload_size=_get(d, "payload_size") + 1), "truncated or padded"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "checksum mismatch"),
    (lambda d: d[:24] + struct.pack("<I", _get(d, "crc") ^ 1) + d[28:], "checksum mismatch"),
    (lambda d: _with(d, side=4), "side 4 is out of range"),
    (lambda d: _with(d, side=1025), "side 1025 is out of range"),
    (lambda d: _with(d, template=2), "unknown alignment template id 2"),
    (lambda d: _with(d, template=0), "unknown alignment template id 0"),
    (lambda d: _with(d, scale=0.2), "scale 0.2 is out of range"),
    (lambda d: _with(d, scale=4.5), "scale 4.5 is out of range"),
    (lambda d: _with(d, scale=float("nan")), "scale nan is out of range"),
    (lambda d: _with(d, quantum=1.0), "quantum 255 grey levels is out of range"),
    (lambda d: _with(d, quantum=4.5 / 255), "quantum 4.5 grey levels is out of range"),
    (lambda d: _with(d, quantum=0.4 / 255), "quantum 0.4 grey levels is out of range"),
    (lambda d: _with(d, quantum=0.0), "quantum 0 grey levels is out of range"),
    (lambda d: _with(d, quantum=float("inf")), "quantum inf grey levels is out of range"),
    (lambda d: _signed(d[:29] + b"sfac\n" + d[34:]), "model set is not printable ASCII"),
    (lambda d: _signed(d[:29] + b"sfac\xe9" + d[34:]), "model set is not printable ASCII"),
    (lambda d: _with_payload(d, b"not zlib"), "cannot be decoded"),
    (lambda d: _with_payload(d, zlib.compress(bytes(RAW - 1))), f"inflates to {RAW - 1} bytes, expected {RAW}"),
    (lambda d: _with_payload(d, zlib.compress(bytes(RAW + 1))), f"inflates to more than {RAW} bytes"),
    (lambda d: _with_payload(d, zlib.compress(bytes(RAW))[:-3]), "incomplete zlib stream"),
    (lambda d: _with_payload(d, zlib.compress(bytes(RAW)) + b"\0"), "bytes after the end of its zlib stream"),
    (lambda d: _with_payload(d, bytes(RAW + RAW // 1000)), "larger than any zlib stream"),
    (lambda d: _with_levels(d, ZEROS + np.int8(33)), "amplitude 66.0 grey levels exceeds the largest budget"),
    (lambda d: _with_levels(d, np.where(np.eye(112, dtype=bool)[..., None], -128, ZEROS)), "exceeds the largest budget"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_every_defect_is_rejected_with_its_reason(corrupt, message):
    with pytest.raises(MaskFormatError, match=re.escape(message)):
        decode_mask(corrupt(GOLDEN))


def test_largest_valid_amplitude_is_accepted():
    assert np.abs(decode_mask(_with_levels(GOLDEN, ZEROS + np.int8(32))).delta).max() * 255 == pytest.approx(64, abs=1e-3)


def test_every_single_bit_flip_of_the_header_is_caught():
    """Version 2 checksums the header too: a flipped scale or quantum bit no longer applies silently."""
    decode_mask(GOLDEN)
    flipped = bytearray(GOLDEN)
    flipped[14] ^= 0x10  # the scale becomes 1.125: in range, so only the checksum can catch it
    with pytest.raises(MaskFormatError, match="checksum mismatch"):
        decode_mask(bytes(flipped))
    header_size = _get(GOLDEN, "header_size")
    for bit in range(header_size * 8):
        data = bytearray(GOLDEN)
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(MaskFormatError):
            decode_mask(bytes(data))


def _bomb(inflated: int, version: int) -> bytes:
    """A valid-looking file whose payload of about ``inflated / 1000`` bytes inflates to ``inflated`` bytes."""
    packer, chunk = zlib.compressobj(9), bytes(1 << 20)
    payload = b"".join(packer.compress(chunk) for _ in range(inflated >> 20)) + packer.flush()
    data = _with_payload(GOLDEN, payload)
    if version == 1:  # payload-only CRC, and no bound on the payload size
        data = _with(data, version=1)[:24] + struct.pack("<I", zlib.crc32(payload)) + data[28:]
    return data


@pytest.mark.parametrize("version", [1, 2])
def test_a_zlib_bomb_is_refused_fast_without_inflating_it(version):
    data = _bomb(32 << 20, version)
    assert len(data) < RAW  # small enough to pass version 2's payload bound: the inflater must stop it
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(MaskFormatError, match=f"inflates to more than {RAW} bytes"):
            decode_mask(data)
        elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (1 << 20) and elapsed < 0.5, (peak, elapsed)  # inflating it all: 32 MiB


def test_read_mask_never_reads_more_than_the_largest_valid_mask(tmp_path):
    path = tmp_path / "huge.fcmask"
    path.write_bytes(GOLDEN + bytes(MAX_READ_BYTES))
    with pytest.raises(MaskFormatError, match="larger than the largest valid mask"):
        read_mask(path)
    path.write_bytes(GOLDEN)
    _check_golden(read_mask(path))

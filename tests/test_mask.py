import struct

import numpy as np
import pytest

from facecloak.errors import MaskFormatError
from facecloak.faces import AlignedFrame
from facecloak.mask import Mask, decode_mask, encode_mask


def _mask(seed=0, size=112):
    rng = np.random.default_rng(seed)
    delta = rng.integers(-16, 17, (size, size, 3)).astype(np.float32) * (2 / 255)
    return Mask(delta=delta, frame=AlignedFrame(size=size), models=("sface", "facenet"))


def test_round_trip_is_exact_on_the_level_grid():
    mask = _mask()
    back = decode_mask(encode_mask(mask, max_bytes=None))
    assert np.allclose(back.delta, mask.delta, atol=1e-6)
    assert back.frame == mask.frame and back.models == ("sface", "facenet")
    assert encode_mask(back, max_bytes=None) == encode_mask(mask, max_bytes=None)  # deterministic bytes


def test_header_fields():
    data = encode_mask(_mask())
    magic, version, header_size, size = struct.unpack_from("<4sHHH", data)
    assert (magic, version, size) == (b"FCMK", 1, 112)
    assert header_size == 29 + len("sface,facenet")


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d[:10], "too short"),
        (lambda d: b"GIF8" + d[4:], "bad magic"),
        (lambda d: d[:4] + struct.pack("<H", 9) + d[6:], "version 9 is not supported"),
        (lambda d: d[:-5], "truncated"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "checksum"),
        (lambda d: d[:8] + struct.pack("<H", 4) + d[10:], "corrupted"),
    ],
)
def test_corrupted_files_are_rejected(corrupt, message):
    with pytest.raises(MaskFormatError, match=message):
        decode_mask(corrupt(encode_mask(_mask())))


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

"""The format-3 golden file (the format-2 golden mask with the default perceptual budget) against
docs/mask-format.md and the on-device reader."""

from __future__ import annotations

import re
import struct
from dataclasses import astuple, replace
from pathlib import Path

import numpy as np
import pytest

from facecloak.clients.ondevice_reference import NO_BUDGET, load_device_mask
from facecloak.mask import decode_mask, encode_mask
from facecloak.optimise.perceptual import PerceptualBudget

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).parents[1] / "docs" / "mask-format.md"


def test_golden_version_3_file_is_the_version_2_mask_with_the_default_budget():
    v2, v3 = (DATA / "mask_v2.fcmask").read_bytes(), (DATA / "mask_v3.fcmask").read_bytes()
    assert len(v3) == len(v2) + 13 == 14501
    version, header, n = struct.unpack_from("<H", v3, 4)[0], struct.unpack_from("<H", v3, 6)[0], v3[28]
    assert (version, header) == (3, 29 + n + 13)
    # Read independently of the reader, from the spec: rule id, then eps, floor, contrast (f32 LE).
    rule, eps, floor, contrast = struct.unpack_from("<Bfff", v3, 29 + n)
    assert (rule, eps * 255, floor, contrast) == (1, pytest.approx(32.0), 0.25, pytest.approx(0.06))
    assert v3[header:] == v2[29 + n:]  # same payload
    mask = decode_mask(v3)
    assert astuple(mask.perceptual) == pytest.approx(astuple(PerceptualBudget()))
    assert np.array_equal(mask.delta, decode_mask(v2).delta)
    assert encode_mask(replace(decode_mask(v2), perceptual=PerceptualBudget())) == v3


def test_the_spec_version_3_example_is_the_golden_file():
    dumps = re.findall(r"```\n(00000000 .*?)```", DOCS.read_text(), re.S)
    example = bytes.fromhex("".join(line[10:58] for line in dumps[1].strip().splitlines()))
    data = (DATA / "mask_v3.fcmask").read_bytes()
    assert len(example) == 64 and example == data[:64]
    text = " ".join(DOCS.read_text().split())
    assert f"{len(data):,} bytes" in text and f"`0x{struct.unpack_from('<I', data, 24)[0]:08X}`" in text


def test_the_device_reader_turns_the_budget_into_the_op_input():
    device = load_device_mask((DATA / "mask_v3.fcmask").read_bytes(), 112)
    assert device.budget.dtype == np.float32 and device.budget.tolist() == pytest.approx([32.0, 0.25, 0.06])
    plain = load_device_mask((DATA / "mask_v2.fcmask").read_bytes(), 112)
    assert plain.budget.tolist() == NO_BUDGET.tolist() == [255.0, 1.0, 1.0]
    assert np.array_equal(device.values, plain.values)

"""Convolution precision while a mask is learned: oneDNN's float32 convolutions on bfloat16 arithmetic.

PyTorch's CPU convolutions (eager and those the AOT step calls) run on oneDNN, which can compute a
float32 convolution with its inputs rounded to bfloat16 and float32 accumulation ("fpmath mode"). On a
CPU with AMX that runs the dense 1x1 convolutions of the MobileFaceNets on the tile units; the graph,
its weights and everything outside the convolutions stay float32, so the same compiled step serves
both modes. Unlike ``PGDConfig.bf16_surrogates`` (autocast, baked into the graph), nothing is cast
between ops. The default (``None``) turns it on where the CPU computes bfloat16 in hardware and keeps
float32 elsewhere, where oneDNN would emulate it. Measured in docs/eval.md "bfloat16 convolutions".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..backend_names import PYTORCH_BACKENDS
from .config import PGDConfig


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (Intel AMX tiles or AVX512-BF16).

    Without them oneDNN emulates bfloat16 on float32 units, which is slower than float32 itself.
    """
    import torch  # noqa: PLC0415 - asked only when a mask is learned

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # x86 probes; other CPUs keep float32
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def bf16_convolutions_on(setting: bool | None) -> bool:
    """``PGDConfig.bf16_convolutions`` resolved: ``None`` (the default) follows the hardware (``native_bf16``)."""
    return native_bf16() if setting is None else setting


@contextmanager
def convolution_precision(setting: bool | None) -> Iterator[None]:
    """Inside, oneDNN's float32 convolutions compute in bfloat16 if ``setting`` resolves on
    (``bf16_convolutions_on``); the previous mode comes back after.

    The mode is PyTorch's process-wide setting: concurrent enrollments in one process must agree on it
    (the server sets it for all of them). ONNX Runtime and TensorRT steps do not read it.
    """
    if not bf16_convolutions_on(setting):
        yield
        return
    import torch  # noqa: PLC0415 - only an enrollment that asks for it needs PyTorch here

    conv = torch.backends.mkldnn.conv
    previous = conv.fp32_precision
    conv.fp32_precision = "bf16"
    try:
        yield
    finally:
        conv.fp32_precision = previous


def precision_note(pgd: PGDConfig, backend: str) -> str:
    """One line on the precision masks are learned in, as ``backend`` runs them (for `facecloak enroll` and the
    server's Describe; a request for bfloat16 convolutions the backend cannot honour is a note of ``build_enroller``)."""
    note = f"surrogates in {'bfloat16' if pgd.bf16_surrogates else 'float32'}"
    if backend in PYTORCH_BACKENDS and bf16_convolutions_on(pgd.bf16_convolutions):  # a oneDNN mode
        note += ", convolutions on bfloat16 arithmetic" + (" (this CPU has bfloat16 units)" if pgd.bf16_convolutions is None else "")
    return note

"""Convolution precision while a mask is learned: oneDNN's float32 convolutions on bfloat16 arithmetic.

PyTorch's CPU convolutions (eager and those the AOT step calls) run on oneDNN, which can compute a
float32 convolution with its inputs rounded to bfloat16 and float32 accumulation ("fpmath mode"). On a
CPU with AMX that runs the dense 1x1 convolutions of the MobileFaceNets on the tile units; the graph,
its weights and everything outside the convolutions stay float32, so the same compiled step serves
both modes. Unlike ``PGDConfig.bf16_surrogates`` (autocast, baked into the graph), nothing is cast
between ops. Measured in docs/eval.md "bfloat16 convolutions".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def convolution_precision(bf16: bool) -> Iterator[None]:
    """Inside, oneDNN's float32 convolutions compute in bfloat16 if ``bf16``; the previous mode comes back after.

    The mode is PyTorch's process-wide setting: concurrent enrollments in one process must agree on it
    (the server sets it for all of them). ONNX Runtime and TensorRT steps do not read it.
    """
    if not bf16:
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

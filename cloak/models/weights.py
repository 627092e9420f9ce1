"""Dead weights and subnormal numbers: near-zero weights set to exactly zero before any runtime sees a model,
and the processor's subnormal arithmetic switched off for the process.

Weight decay leaves switched-off channels whose weights shrink towards zero without reaching it. The
Faceplugin file holds 176,911 of its 1.19 M weights below 1e-20 (8,938 subnormal). On x86 those weights, and
the subnormal activations they produce, take the processor's slow path: one of its 1x1 convolutions runs
in 41 ms instead of 0.8 ms. A weight below 1e-20 times any activation these networks produce stays far
under float32's resolution of an embedding: ONNX Runtime's embeddings with and without them agreed exactly
in our check (tests/test_models.py holds them within 1e-6). Measured in probes on a 2-core Xeon (AVX-512):
Faceplugin inference in ONNX Runtime 273 -> 49 ms for 8 faces, forward + backward in PyTorch eager
0.38 -> 0.15 s; the default ensemble's AOT step 505 -> 274 ms (docs/eval.md "Reduced precision and dead
weights"). The subnormal activations that remain are flushed by the processor once the application has
called ``flush_subnormals`` at start-up, as `facecloak enroll`, `facecloak eval` and the server do.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

DEAD_WEIGHT = 1e-20  # magnitudes below this are zeroed


def zero_dead_weights(values: np.ndarray) -> np.ndarray:
    """``values`` with floating-point magnitudes below ``DEAD_WEIGHT`` set to zero (other dtypes as they are)."""
    if not np.issubdtype(values.dtype, np.floating):
        return values
    return np.where(np.abs(values) < DEAD_WEIGHT, np.zeros_like(values), values)


def without_dead_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the dead weights of every floating-point initialiser zeroed, in place; returned."""
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        zeroed = zero_dead_weights(values)
        if zeroed is not values and np.any(zeroed != values):
            init.CopyFrom(numpy_helper.from_array(zeroed, init.name))
    return model


def flush_subnormals() -> bool:
    """Make this process's float arithmetic treat subnormal numbers as zero (x86 FTZ + DAZ); True if the CPU can.

    A thread inherits the mode when it is created, so applications call this at start-up, before the first
    parallel operation creates PyTorch's (OpenMP, oneDNN) and ONNX Runtime's worker threads; called later it
    reaches only the calling thread. Values below float32's 1.2e-38 change nothing these networks compute at
    the resolution of an embedding or of a PGD sign step.
    """
    import torch  # noqa: PLC0415 - the mode is set through PyTorch, the runtime that needs it

    return bool(torch.set_flush_denormal(True))

"""Run an ONNX inference graph as a differentiable PyTorch module.

We interpret the graph node by node with torch ops instead of using onnx2torch: onnx2torch imports
torchvision (unusable with the CPU torch build here) and cannot convert a Clip whose bounds are
computed tensors. The op set below covers the shipped face-recognition models; an unknown op fails
loudly at load time, never silently at run time.

Skip-gradient model augmentation (SGM, Wu et al. 2020): inside ``residual_gradient(gamma)`` the
gradient that flows back through each residual block's branch is scaled by ``gamma`` (the skip path
keeps all of it); the forward values do not change. Attacks on such a surrogate follow the skip
connections' low-level features, which transfer across architectures better. A residual add is an
``Add`` of two computed activations; its branch is the input produced later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from .weights import zero_dead_weights

Tensor = torch.Tensor
OpFn = Callable[[Sequence[Tensor | None], dict], Tensor]
RESIDUAL_ADD = "ResidualAdd"  # an Add of two computed activations, found at load time
_RESIDUAL_GRADIENT: ContextVar[float] = ContextVar("residual_gradient", default=1.0)


@contextmanager
def residual_gradient(gamma: float) -> Iterator[None]:
    """Scale the gradient through every residual branch by ``gamma`` in this context (1 = plain autograd)."""
    token = _RESIDUAL_GRADIENT.set(float(gamma))
    try:
        yield
    finally:
        _RESIDUAL_GRADIENT.reset(token)


def _residual_add(x: Sequence[Tensor | None], a: dict) -> Tensor:
    skip, branch = (x[0], x[1]) if a["branch"] == 1 else (x[1], x[0])
    gamma = _RESIDUAL_GRADIENT.get()
    if gamma == 1.0:
        return skip + branch
    return skip + gamma * branch + (1 - gamma) * branch.detach()


def _pads(attrs: dict, ndim: int = 2) -> list[int]:
    pads = attrs.get("pads", [0] * (2 * ndim))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("auto_pad is not supported")
    return pads


def _conv(x: Sequence[Tensor | None], a: dict) -> Tensor:
    top, left, bottom, right = _pads(a)
    inp = x[0]
    if (top, left) != (bottom, right):
        inp = F.pad(inp, (left, right, top, bottom))
        top = left = 0
    return F.conv2d(inp, x[1], x[2] if len(x) > 2 else None, a.get("strides", [1, 1]), (top, left),
                    a.get("dilations", [1, 1]), a.get("group", 1))


def _max_pool(x: Sequence[Tensor | None], a: dict) -> Tensor:
    top, left, bottom, right = _pads(a)
    inp = x[0]
    if (top, left) != (bottom, right):
        inp = F.pad(inp, (left, right, top, bottom), value=float("-inf"))
        top = left = 0
    return F.max_pool2d(inp, a["kernel_shape"], a.get("strides", a["kernel_shape"]), (top, left),
                        a.get("dilations", [1, 1]), bool(a.get("ceil_mode", 0)))


def _batch_norm(x: Sequence[Tensor | None], a: dict) -> Tensor:
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=a.get("epsilon", 1e-5))


def _prelu(x: Sequence[Tensor | None], a: dict) -> Tensor:
    inp, slope = x[0], x[1]
    if slope.dim() == 1 and inp.dim() == 4:
        slope = slope.reshape(-1, 1, 1)
    per_channel = slope.numel() == 1 or (inp.dim() >= 2 and slope.numel() == inp.shape[1] == slope.shape[0])
    if per_channel and not (torch.is_grad_enabled() and inp.requires_grad):
        return F.prelu(inp, slope.reshape(-1))  # aten's vectorised kernel: ~15x the arithmetic below
    # Written as x * factor because aten's PReLU backward also computes the (frozen) slope gradient,
    # a quarter of a PGD step on CPU; here the backward is a single multiply. The factor is
    # arithmetic, not torch.where: aten's where is not vectorised and cost 12 multiplies.
    positive = (inp >= 0).to(inp.dtype)
    return inp * (positive + slope * (1 - positive))


def _gemm(x: Sequence[Tensor | None], a: dict) -> Tensor:
    lhs = x[0].transpose(-1, -2) if a.get("transA", 0) else x[0]
    rhs = x[1].transpose(-1, -2) if a.get("transB", 0) else x[1]
    out = a.get("alpha", 1.0) * (lhs @ rhs)
    if len(x) > 2 and x[2] is not None:
        out = out + a.get("beta", 1.0) * x[2]
    return out


def _clip(x: Sequence[Tensor | None], a: dict) -> Tensor:
    lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    return torch.clamp(x[0], min=lo, max=hi)


def _reduce_l2(x: Sequence[Tensor | None], a: dict) -> Tensor:
    axes = a.get("axes") or (x[1].tolist() if len(x) > 1 and x[1] is not None else None)
    return torch.linalg.vector_norm(x[0], 2, dim=axes, keepdim=bool(a.get("keepdims", 1)))


def _unsqueeze(x: Sequence[Tensor | None], a: dict) -> Tensor:
    axes = a.get("axes") or x[1].tolist()
    out = x[0]
    for axis in sorted(axes):
        out = out.unsqueeze(axis)
    return out


def _reshape(x: Sequence[Tensor | None], a: dict) -> Tensor:
    shape = [int(v) for v in x[1].tolist()]
    shape = [x[0].shape[i] if v == 0 and not a.get("allowzero", 0) else v for i, v in enumerate(shape)]
    return x[0].reshape(shape)


def _expand(x: Sequence[Tensor | None], a: dict) -> Tensor:
    target = [int(v) for v in x[1].tolist()]
    return x[0] * torch.ones(target, dtype=x[0].dtype, device=x[0].device)  # ONNX Expand broadcasts both ways


OPS: dict[str, OpFn] = {
    "Add": lambda x, a: x[0] + x[1],
    RESIDUAL_ADD: _residual_add,
    "Sub": lambda x, a: x[0] - x[1],
    "Mul": lambda x, a: x[0] * x[1],
    "Div": lambda x, a: x[0] / x[1],
    "MatMul": lambda x, a: x[0] @ x[1],
    "Abs": lambda x, a: x[0].abs(),
    "Relu": lambda x, a: F.relu(x[0]),
    "Sigmoid": lambda x, a: torch.sigmoid(x[0]),
    "PRelu": _prelu,
    "Conv": _conv,
    "MaxPool": _max_pool,
    "BatchNormalization": _batch_norm,
    "GlobalAveragePool": lambda x, a: x[0].mean(dim=(2, 3), keepdim=True),
    "Gemm": _gemm,
    "Flatten": lambda x, a: x[0].flatten(a.get("axis", 1)) if a.get("axis", 1) else x[0].reshape(1, -1),
    "Dropout": lambda x, a: x[0],
    "Identity": lambda x, a: x[0],
    "Concat": lambda x, a: torch.cat(list(x), dim=a["axis"]),
    # ONNX's default perm reverses the axes.
    "Transpose": lambda x, a: x[0].permute(a.get("perm") or list(range(x[0].dim()))[::-1]),
    "Shape": lambda x, a: torch.tensor(x[0].shape, dtype=torch.int64),
    "Gather": lambda x, a: torch.index_select(x[0], a.get("axis", 0), x[1].reshape(-1)).reshape(
        x[0].shape[: a.get("axis", 0)] + x[1].shape + x[0].shape[a.get("axis", 0) + 1 :]
    ),
    "Unsqueeze": _unsqueeze,
    "Reshape": _reshape,
    "ReduceL2": _reduce_l2,
    "Clip": _clip,
    "Expand": _expand,
}


class OnnxGraphModule(torch.nn.Module):
    """A torch module that evaluates an ONNX graph with the ops in ``OPS``; weights are frozen buffers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unknown = sorted({n.op_type for n in graph.node} - OPS.keys() - {"Constant"})
        if unknown:
            raise NotImplementedError(f"ONNX ops not supported by the torch interpreter: {unknown}")
        self._names: dict[str, str] = {}
        used = {name for node in graph.node for name in node.input}
        for init in graph.initializer:
            if init.name in used:  # some files carry dead initialisers; do not hold them in memory
                self._register(init.name, numpy_helper.to_array(init))
        self._nodes: list[tuple[str, list[str], list[str], dict]] = []
        for node in graph.node:
            attrs = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
            if node.op_type == "Constant":
                self._register(node.output[0], numpy_helper.to_array(attrs["value"]))
                continue
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
            self._nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self._fold_batch_norms()
        self._mark_residual_adds()
        initialised = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in initialised]
        self.output_names = [o.name for o in graph.output]

    def _fold_batch_norms(self) -> None:
        """Fold inference BatchNorm into the Conv that feeds it (fewer ops forward and backward)."""
        consumers: dict[str, int] = {}
        for _, ins, _, _ in self._nodes:
            for name in ins:
                consumers[name] = consumers.get(name, 0) + 1
        producers: dict[str, int] = {}  # output name -> index in ``keep``
        keep: list[tuple[str, list[str], list[str], dict]] = []
        for op, ins, outs, attrs in self._nodes:
            src = producers.get(ins[0])
            if op == "BatchNormalization" and src is not None and consumers.get(ins[0]) == 1 and keep[src][0] == "Conv":
                conv_op, conv_ins, _, conv_attrs = keep[src]
                gamma, beta, mean, var = (getattr(self, self._names[n]) for n in ins[1:5])
                factor = gamma / torch.sqrt(var + attrs.get("epsilon", 1e-5))
                weight = getattr(self, self._names[conv_ins[1]]) * factor.reshape(-1, 1, 1, 1)
                bias = getattr(self, self._names[conv_ins[2]]) if len(conv_ins) > 2 else torch.zeros_like(mean)
                w_name, b_name = f"{outs[0]}::w", f"{outs[0]}::b"
                self._register(w_name, weight.numpy())
                self._register(b_name, ((bias - mean) * factor + beta).numpy())
                keep[src] = (conv_op, [conv_ins[0], w_name, b_name], outs, conv_attrs)
                producers[outs[0]] = src
                continue
            producers[outs[0]] = len(keep)
            keep.append((op, ins, outs, attrs))
        self._nodes = keep

    def _mark_residual_adds(self) -> None:
        produced_at = {outs[0]: i for i, (_, _, outs, _) in enumerate(self._nodes)}
        for i, (op, ins, outs, attrs) in enumerate(self._nodes):
            if op == "Add" and all(name in produced_at for name in ins):
                branch = 1 if produced_at[ins[1]] > produced_at[ins[0]] else 0
                self._nodes[i] = (RESIDUAL_ADD, ins, outs, {**attrs, "branch": branch})

    def residual_adds(self) -> int:
        """How many residual adds the graph has (those ``residual_gradient`` acts on)."""
        return sum(op == RESIDUAL_ADD for op, _, _, _ in self._nodes)

    def _register(self, name: str, value: np.ndarray) -> None:
        buffer = f"c{len(self._names)}"
        tensor = torch.from_numpy(np.array(zero_dead_weights(np.asarray(value))))  # also what BatchNorm folding made
        self.register_buffer(buffer, tensor.float() if tensor.is_floating_point() else tensor, persistent=False)
        self._names[name] = buffer

    def run(self, *inputs: Tensor) -> dict[str, Tensor | None]:
        """Evaluate the graph; every named value (outputs and intermediate activations) by name."""
        env: dict[str, Tensor | None] = {"": None}
        env.update({name: getattr(self, buf) for name, buf in self._names.items()})
        env.update(zip(self.input_names, inputs))
        for op, ins, outs, attrs in self._nodes:
            env[outs[0]] = OPS[op]([env[i] for i in ins], attrs)
        return env

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        env = self.run(*inputs)
        results = tuple(env[o] for o in self.output_names)
        return results[0] if len(results) == 1 else results


def load_torch_model(path: str | Path) -> OnnxGraphModule:
    """Load an ONNX file as a frozen, eval-mode torch module."""
    module = OnnxGraphModule(onnx.load(str(path)))
    return module.eval().requires_grad_(False)

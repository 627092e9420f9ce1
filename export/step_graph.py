"""One PGD iteration (loss, input gradient, attention update, projection) as one standard-ONNX graph.

The traced function is the core's own pure ``facecloak.optimise.torch_step.pgd_step``. Only the diversity draw
is re-expressed so that one graph serves every step: the random affine warp ``theta`` is a graph
input, and the random down/up-sampling becomes a graph input too, as the (S, S) matrix ``resample``
(both resamplers are linear and separable, so down-then-up is ``R @ x @ R^T``). ``pgd_step`` is
traced with ``down_size = S`` and ``R`` is applied in front of every embedder, which is exactly the
core's order: warp, then down/up-sample, then embed. The PGD constants (step, momentum, attention
rate, self weight, gradient smoothing) are baked in and recorded in the manifest; the per-pixel step
size is an input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facecloak.errors import BadOptionError
from facecloak.mask.maskset import MAX_MEMBERS
from facecloak.models import get_card, torch_embedder
from facecloak.optimise import PGDConfig, draw_diversity
from facecloak.optimise.config import BAKED_FIELDS, MIN_DOWN_SIZE
from facecloak.optimise.torch_step import StepState, SurrogateTarget, pgd_step

from .decompositions import export_decompositions, resampling_matrix

STATE_INPUTS = ("delta", "alpha", "velocity", "views", "bound", "steps", "view_bound", "theta", "resample", "angle",
                "spectrum")
DRAW_INPUTS = ("theta", "resample", "angle", "spectrum")  # the per-step random part: a leading K when unrolled
STEP_OUTPUTS = ("new_delta", "new_alpha", "new_velocity", "loss")
ANCHOR_KINDS = ("near", "far", "user")


@dataclass(frozen=True)
class StepSpec:
    """What one exported step graph is specialised to."""

    models: tuple[str, ...]
    views: int = 8
    size: int = 112
    pgd: PGDConfig = field(default_factory=PGDConfig)
    members: int = 0  # K of a mask set stepped together: delta/velocity (K, 3, S, S), near/far (K, D); 0 = one mask

    def __post_init__(self) -> None:
        if not self.models:
            raise BadOptionError("a step graph needs at least one surrogate model")
        for name in self.models:
            get_card(name)
        if not 1 <= self.views <= 64:
            raise BadOptionError(f"views must be in 1..64, got {self.views}")
        if not 16 <= self.size <= 512:
            raise BadOptionError(f"size must be in 16..512, got {self.size}")
        if not 0 <= self.members <= MAX_MEMBERS:
            raise BadOptionError(f"members must be in 0..{MAX_MEMBERS} (0: one mask), got {self.members}")

    @property
    def name(self) -> str:
        set_part = f"_m{self.members}" if self.members else ""
        return f"pgd_step_{'-'.join(self.models)}_v{self.views}_s{self.size}{set_part}"  # '-': safe in Triton model names and URLs

    def input_names(self) -> list[str]:
        return list(STATE_INPUTS) + anchor_input_names(self.models)

    def baked_pgd(self) -> dict[str, float | bool]:
        return {k: v for k, v in asdict(self.pgd).items() if k in BAKED_FIELDS}


def pgd_from_baked(baked: Mapping[str, float], base: PGDConfig = PGDConfig()) -> PGDConfig:
    """``base`` with a step graph's recorded constants (manifests store them as floats)."""
    return replace(base, **{k: type(getattr(base, k))(v) for k, v in baked.items()})


def anchor_input_names(models: Sequence[str]) -> list[str]:
    return [f"{kind}_{model}" for model in models for kind in ANCHOR_KINDS]


def resample_matrix(size: int, down_size: int) -> torch.Tensor:
    """(S, S) float32 matrix of diversify's down-sampling to ``down_size`` and back (identity if none)."""
    if down_size >= size:
        return torch.eye(size)
    down = resampling_matrix(down_size, size, lambda x, s: F.interpolate(
        x, size=s, mode="bilinear", antialias=True, align_corners=False))
    up = resampling_matrix(size, down_size, lambda x, s: F.interpolate(x, size=s, mode="bilinear", align_corners=False))
    return (up @ down).float()


def resample_table(size: int) -> np.ndarray:
    """(S + 1, S, S) float32: entry d is ``resample_matrix(size, d)`` (rows below 8 px are unused)."""
    table = np.zeros((size + 1, size, size), dtype=np.float32)
    for down in range(MIN_DOWN_SIZE, size + 1):
        table[down] = resample_matrix(size, down).numpy()
    return table


def step_function(spec: StepSpec, embedders: dict[str, torch.nn.Module] | None = None) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The function that is traced: flat tensors in (``spec.input_names()``), ``STEP_OUTPUTS`` out."""
    embedders = embedders or {name: torch_embedder(name) for name in spec.models}

    def resampled(embed: torch.nn.Module, matrix: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(batch: torch.Tensor) -> torch.Tensor:
            with torch.autocast(batch.device.type, enabled=False):  # float32 like the core's resampling, also in a bf16 step
                batch = matrix @ batch @ matrix.T
            return embed(batch)

        return run

    def step(delta, alpha, velocity, views, bound, steps, view_bound, theta, resample, angle, spectrum, *anchors):  # noqa: ANN001 - traced positionally
        targets = [SurrogateTarget(resampled(embedders[name], resample), *anchors[3 * i : 3 * i + 3])
                   for i, name in enumerate(spec.models)]
        state, loss = pgd_step(StepState(delta, alpha, velocity), views, bound, steps, view_bound, targets, spec.pgd,
                               theta, views.shape[-1], angle, spectrum)
        return state.delta, state.alpha, state.velocity, loss

    return step


def example_inputs(spec: StepSpec, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Plausible inputs for tracing: random views/anchors, one diversity draw, a 6/255 budget."""
    gen = torch.Generator().manual_seed(seed)
    n, s = spec.views, spec.size
    bound = torch.full((3, s, s), 6 / 255)
    draw = draw_diversity(np.random.default_rng(seed), n, s, PGDConfig(diversity_prob=1.0, diversity_rotation=10, spectrum_rho=0.5))
    per_member = (spec.members,) if spec.members else ()
    state = ((torch.rand(*per_member, 3, s, s, generator=gen) * 2 - 1) * bound, torch.ones(s, s), torch.zeros(*per_member, 3, s, s))
    anchors = []
    for name in spec.models:
        dim = get_card(name).embedding_dim
        anchors += [F.normalize(torch.randn(*(() if kind == "user" else per_member), dim, generator=gen), dim=-1) for kind in ANCHOR_KINDS]
    steps = torch.full((3, s, s), spec.pgd.step)
    view_bound = torch.rand(n, 1, s, s, generator=gen) * (8 / 255)  # below the bound: the per-view clip is traced live
    return (*state, torch.rand(n, 3, s, s, generator=gen), bound, steps, view_bound, torch.from_numpy(draw.theta), resample_matrix(s, draw.down_size),
            torch.from_numpy(draw.angle), torch.from_numpy(draw.spectrum), *anchors)


def unrolled_step_function(spec: StepSpec, k: int) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``k`` chained steps in one function: each draw input gains a leading K (``theta`` (K, N, 2, 3), ``resample``
    (K, S, S), ``angle`` (K, N), ``spectrum`` (K, N, 2, 3, S, S)); losses (K,)."""
    step = step_function(spec)

    def unrolled(delta, alpha, velocity, views, bound, steps, view_bound, theta, resample, angle, spectrum, *anchors):  # noqa: ANN001
        losses = []
        for i in range(k):
            delta, alpha, velocity, loss = step(delta, alpha, velocity, views, bound, steps, view_bound, theta[i], resample[i],
                                                angle[i], spectrum[i], *anchors)
            losses.append(loss)
        return delta, alpha, velocity, torch.stack(losses)

    return unrolled


def unrolled_inputs(spec: StepSpec, k: int) -> tuple[torch.Tensor, ...]:
    inputs = list(example_inputs(spec))
    for name in DRAW_INPUTS:
        at = STATE_INPUTS.index(name)
        inputs[at] = inputs[at].expand(k, *inputs[at].shape).contiguous()
    return tuple(inputs)


def trace_step(fn: Callable[..., tuple[torch.Tensor, ...]], inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """Trace ``fn`` with real tensors: autograd's backward kernels are recorded, then decomposed into
    forward ops, so the graph is one plain forward program (what ONNX and AOTInductor both take)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(fn, decomposition_table=export_decompositions())(*inputs).eval()  # eval: silences a warning


def export_traced(fn: Callable[..., tuple[torch.Tensor, ...]], inputs: tuple[torch.Tensor, ...], input_names: list[str],
                  path: Path, opset: int = 18) -> dict[str, float]:
    """Trace ``fn`` (``trace_step``) and export it to ONNX at ``path``."""
    start = time.perf_counter()
    graph = trace_step(fn, inputs)
    traced = time.perf_counter()
    program = torch.onnx.export(graph, inputs, dynamo=True, opset_version=opset, input_names=input_names,
                                output_names=list(STEP_OUTPUTS), verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return {"trace_s": traced - start, "export_s": time.perf_counter() - traced}


def compile_step_aot(spec: StepSpec, path: Path) -> dict[str, float]:
    """The step graph compiled ahead of time by AOTInductor into a package (.pt2) for this CPU.

    Same traced function as the ONNX export; the package loads in milliseconds, with no tracing or
    compiling at request time (``engines.aot_runtime`` runs it).
    """
    start = time.perf_counter()
    inputs = example_inputs(spec)
    graph = trace_step(step_function(spec), inputs)
    traced = time.perf_counter()
    program = torch.export.export(graph, inputs, strict=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return {"trace_s": traced - start, "compile_s": time.perf_counter() - traced}


def export_step(spec: StepSpec, path: Path, opset: int = 18, unroll: int = 1) -> dict[str, float]:
    """Export the step graph (or ``unroll`` chained steps) to ``path`` (.onnx); returns timings in seconds."""
    if unroll == 1:
        return export_traced(step_function(spec), example_inputs(spec), spec.input_names(), path, opset)
    return export_traced(unrolled_step_function(spec, unroll), unrolled_inputs(spec, unroll), spec.input_names(), path, opset)

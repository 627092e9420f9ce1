"""The luminance-first projection (PGDConfig.chroma_ratio) inside the exported step: traceable, ORT parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facecloak.export.decompositions import export_decompositions
from facecloak.optimise import PGDConfig
from facecloak.optimise.torch_step import StepState, SurrogateTarget, pgd_step


class _TinyEmbedder(torch.nn.Module):
    """A small conv net standing in for a surrogate: the step's graph shape without its weight."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(8, 3, 3, 3, generator=gen) * 0.3, requires_grad=False)
        self.w2 = torch.nn.Parameter(torch.randn(16, 8 * 8 * 8, generator=gen) * 0.05, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.conv2d(x, self.w1, padding=1, stride=4)).flatten(1)  # 32 px -> 8 x 8
        return F.normalize(x @ self.w2.T, dim=1)


@pytest.mark.parametrize("ratio", [0.25, 1.0])
def test_step_with_reduced_chroma_traces_and_exports(ratio: float, tmp_path) -> None:  # noqa: ANN001
    from torch.fx.experimental.proxy_tensor import make_fx

    onnxruntime = pytest.importorskip("onnxruntime")
    cfg = PGDConfig(chroma_ratio=ratio)
    embed = _TinyEmbedder().eval()
    s, n = 32, 2
    gen = torch.Generator().manual_seed(1)
    bound = torch.full((3, s, s), 8 / 255)
    inputs = ((torch.rand(3, s, s, generator=gen) * 2 - 1) * bound, torch.ones(s, s), torch.zeros(3, s, s),
              torch.rand(n, 3, s, s, generator=gen), bound, bound / 4, torch.rand(n, 1, s, s, generator=gen) * (8 / 255),
              torch.eye(2, 3).expand(n, 2, 3).contiguous(), *F.normalize(torch.randn(3, 16, generator=gen), dim=1))

    def step(delta, alpha, velocity, views, bound, steps, view_bound, theta, near, far, user):  # noqa: ANN001
        state, loss = pgd_step(StepState(delta, alpha, velocity), views, bound, steps, view_bound,
                               [SurrogateTarget(embed, near, far, user)], cfg, theta, s)
        return state.delta, state.velocity, loss

    graph = make_fx(step, decomposition_table=export_decompositions())(*inputs).eval()
    eager = step(*inputs)
    traced = graph(*inputs)
    for a, b in zip(eager, traced):
        assert torch.allclose(a, b, atol=1e-6)
    luma = eager[0].mean(0, keepdim=True)
    if ratio < 1:  # 1.0 is the plain per-channel clip, whose chroma may reach 4/3 of the budget
        assert ((eager[0] - luma).abs().amax(0) <= ratio * bound[0] + 1e-7).all()
    names = ["delta", "alpha", "velocity", "views", "bound", "steps", "view_bound", "theta", "near", "far", "user"]
    program = torch.onnx.export(graph, inputs, dynamo=True, input_names=names, verbose=False)
    program.save(str(tmp_path / "step.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    new_delta = session.run(None, feeds)[0]
    assert np.abs(new_delta - eager[0].numpy()).max() < 1e-5

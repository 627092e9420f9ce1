"""Surrogates in bfloat16 (PGDConfig.bf16_surrogates): the torch step, the traced step graph, the options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facecloak.errors import BadOptionError
from facecloak.export import cli as export_cli
from facecloak.export.pipeline import ExportConfig, export_step_graph
from facecloak.export.step_graph import StepSpec, example_inputs, step_function, trace_step
from facecloak.optimise import PGDConfig


def _step(bf16: bool) -> tuple[torch.fx.GraphModule, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The traced sface step graph, its inputs and the eager step's outputs on them."""
    spec = StepSpec(("sface",), views=2, pgd=PGDConfig(bf16_surrogates=bf16))
    inputs = example_inputs(spec)
    return trace_step(step_function(spec), inputs), inputs, step_function(spec)(*inputs)


def test_the_step_runs_its_surrogates_in_bf16_and_the_traced_graph_keeps_it() -> None:
    plain_graph, inputs, plain = _step(False)
    graph, _, eager = _step(True)

    def dtypes(g: torch.fx.GraphModule) -> set[torch.dtype]:
        return {n.meta["val"].dtype for n in g.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)}

    assert torch.bfloat16 in dtypes(graph) and torch.bfloat16 not in dtypes(plain_graph)
    assert abs(float(eager[3]) - float(plain[3])) > 1e-5  # the surrogates' rounding changes the loss
    traced = graph(*inputs)
    assert abs(float(traced[3]) - float(eager[3])) < 1e-3  # the graph computes the eager bf16 step
    assert (traced[0] == eager[0]).float().mean() > 0.9  # sign flips only where the gradient is near zero
    delta, bound = inputs[0], inputs[4]
    assert traced[0].dtype == torch.float32 and (traced[0].abs() <= bound + 1e-6).all() and not torch.equal(traced[0], delta)


def test_an_onnx_step_graph_refuses_bf16_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(BadOptionError, match="ONNX has no bfloat16 convolution"):
        export_step_graph(ExportConfig(out=tmp_path, models=("sface",), views=2), PGDConfig(bf16_surrogates=True))
    assert list(tmp_path.iterdir()) == []


def test_the_options_reach_the_pgd_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from facecloak.cli import _enroll_config, build_parser

    def pgd(*flags: str) -> PGDConfig:
        return _enroll_config(build_parser().parse_args(["enroll", "x.jpg", "-o", "x.fcmask", *flags])).pgd

    assert pgd("--bf16").bf16_surrogates and not pgd().bf16_surrogates

    asked: list[PGDConfig] = []
    monkeypatch.setattr("facecloak.export.pipeline.export_aot_step", lambda config, pgd, *_: asked.append(pgd))
    assert export_cli.main(["aot", "--models", "sface", "--bf16"]) == 0
    assert export_cli.main(["aot", "--models", "sface"]) == 0
    assert [p.bf16_surrogates for p in asked] == [True, False]

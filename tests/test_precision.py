"""Surrogates in bfloat16 (PGDConfig.bf16_surrogates): the torch step, the traced step graph, the options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
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


def test_bf16_convolutions_hold_for_every_step_and_only_while_the_mask_is_learned(selfie, monkeypatch: pytest.MonkeyPatch) -> None:
    """The enrollment's steps see oneDNN's bfloat16 convolution mode; before and after, the process's mode is as it was."""
    from facecloak.enroll import EnrollConfig, Enroller
    from facecloak.optimise.torch_backend import TorchBackend

    seen: list[str] = []

    class Recording(TorchBackend):
        def stepper(self, *args, **kwargs):
            step = super().stepper(*args, **kwargs)

            def recorded(*a, **k):
                seen.append(torch.backends.mkldnn.conv.fp32_precision)
                return step(*a, **k)

            return recorded

    enroller, before = Enroller(backend=Recording()), torch.backends.mkldnn.conv.fp32_precision
    config = EnrollConfig(surrogates=("sface",), views=2, check_views=0, pgd=PGDConfig(iterations=2, bf16_convolutions=True))
    bf16 = enroller.enroll(selfie, config)
    assert seen == ["bf16", "bf16"] and torch.backends.mkldnn.conv.fp32_precision == before
    seen.clear()
    plain = enroller.enroll(selfie, replace(config, pgd=PGDConfig(iterations=2, bf16_convolutions=False)))
    assert seen == [before, before]
    assert not np.array_equal(bf16.mask.delta, plain.mask.delta)  # the mode reached the convolutions
    for units in (True, False):  # the default follows the hardware
        monkeypatch.setattr("facecloak.optimise.precision.native_bf16", lambda: units)
        seen.clear()
        enroller.enroll(selfie, replace(config, pgd=PGDConfig(iterations=1)))
        assert seen == (["bf16"] if units else [before])


def test_native_bf16_reads_the_cpu_s_bfloat16_units() -> None:
    """What PyTorch reports agrees with the kernel's CPU flags (Linux): AMX tiles or AVX512-BF16."""
    from facecloak.optimise.precision import bf16_convolutions_on, native_bf16

    flags = {word for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for word in line.split(":", 1)[1].split()}
    assert native_bf16() is bool(flags & {"amx_tile", "avx512_bf16"})
    assert bf16_convolutions_on(None) is native_bf16() and bf16_convolutions_on(True) and not bf16_convolutions_on(False)


def test_convolution_precision_comes_back_after_an_error() -> None:
    from facecloak.optimise.precision import convolution_precision

    before = torch.backends.mkldnn.conv.fp32_precision
    with pytest.raises(RuntimeError), convolution_precision(True):
        assert torch.backends.mkldnn.conv.fp32_precision == "bf16"
        raise RuntimeError("stop")
    assert torch.backends.mkldnn.conv.fp32_precision == before


def test_bf16_convolutions_options_reach_the_pgd_settings() -> None:
    from facecloak.cli import _enroll_config, build_parser
    from facecloak.evaluate.cli import config_from_args
    from facecloak.server.config import load_config

    def enroll(*flags: str) -> PGDConfig:
        return _enroll_config(build_parser().parse_args(["enroll", "x.jpg", "-o", "x.fcmask", *flags])).pgd

    assert enroll("--bf16-convolutions").bf16_convolutions is True and enroll("--no-bf16-convolutions").bf16_convolutions is False
    assert enroll().bf16_convolutions is None  # the hardware decides
    assert config_from_args(build_parser().parse_args(["eval", "--bf16-convolutions"])).bf16_convolutions is True
    assert config_from_args(build_parser().parse_args(["eval", "--no-bf16-convolutions"])).bf16_convolutions is False
    assert config_from_args(build_parser().parse_args(["eval"])).bf16_convolutions is None
    assert load_config(["--bf16-convolutions", "on"], {}).bf16_convolutions and load_config([], {}).bf16_convolutions is None

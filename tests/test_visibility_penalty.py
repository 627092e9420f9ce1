"""The visibility penalty (issue 13): FLIP's contrast-sensitivity energy of the delta, descended with the cloak loss."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from facecloak.enroll import EnrollConfig
from facecloak.errors import BadOptionError
from facecloak.export.pipeline import ExportConfig, export_step_graph, export_surrogates
from facecloak.export.step_graph import StepSpec
from facecloak.optimise import Budget, PGDConfig, run_pgd
from facecloak.optimise.csf import visible_energy, visible_energy_gradient
from facecloak.optimise.torch_backend import TorchBackend

from .test_export_step import VIEWS, assert_one_loop_two_steppers_agree, real_problem

PENALISED = PGDConfig(iterations=3, visibility_weight=2.0)


@pytest.mark.parametrize("size", [112, 160])
def test_gradient_is_the_energys(size: int) -> None:
    delta = (torch.rand(3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size)) - 0.5) / 8
    (autograd,) = torch.autograd.grad(visible_energy(delta.requires_grad_()), [delta])
    assert torch.allclose(visible_energy_gradient(delta.detach()), autograd, rtol=1e-9, atol=1e-15)


def test_the_eye_passes_blotches_and_stops_pixel_alternation() -> None:
    """Same amplitude, same share of pixels: 8 px grey blotches pass the filters, a 1 px chequerboard
    hardly does, and chroma speckle of 3 px cells is filtered harder than luminance speckle of the same size."""
    ramp = torch.arange(112)
    checker = ((ramp[:, None] + ramp[None, :]) % 2 * 2 - 1).float() * 8 / 255
    blotches = (((ramp[:, None] // 8) + (ramp[None, :] // 8)) % 2 * 2 - 1).float() * 8 / 255
    cells = (((ramp[:, None] // 3) + (ramp[None, :] // 3)) % 2 * 2 - 1).float() * 8 / 255
    grey = lambda plane: plane.expand(3, -1, -1)  # noqa: E731
    assert visible_energy(grey(checker)) < 0.05 * visible_energy(grey(blotches))
    blue_yellow = torch.stack([cells / 2, cells / 2, -cells])  # zero luminance
    assert visible_energy(blue_yellow) < visible_energy(grey(cells * 1.5))  # equal RGB peak
    assert visible_energy(torch.zeros(3, 112, 112)) == 0


def test_penalty_makes_the_learned_mask_less_visible() -> None:
    """Real SFace, real LFW views: the penalised loop keeps less visible energy in the delta and still
    lowers the cloak loss."""
    problem = real_problem(StepSpec(("sface",), VIEWS))
    budget = Budget(problem["budget"].numpy(), 4 / 255)

    def learn(weight: float):
        cfg = replace(PENALISED, iterations=6, visibility_weight=weight)
        stepper = TorchBackend().stepper(problem["anchors"], VIEWS, 112, cfg)
        return run_pgd(stepper, problem["views"].numpy(), budget, cfg, seed=3)

    plain, penalised = learn(0.0), learn(2.0)
    energy = {k: float(visible_energy(torch.from_numpy(r.delta))) for k, r in (("plain", plain), ("penalised", penalised))}
    assert energy["penalised"] < 0.6 * energy["plain"]
    assert penalised.losses[-1] < penalised.losses[0]
    assert np.all(np.abs(penalised.delta) <= problem["budget"].numpy() + 1e-6)


def test_weight_is_validated() -> None:
    with pytest.raises(BadOptionError, match="visibility_weight"):
        PGDConfig(visibility_weight=-1).validate()


def test_subtle_preset_carries_the_penalty_on_every_path() -> None:
    """CLI and API: --strength subtle / BUDGET_PRESET_SUBTLE get the table's budget and penalty, an
    explicit weight overrides it, and a local config with a weight survives the trip through the API."""
    from facecloak.cli import _enroll_config, build_parser
    from facecloak.presets import STRENGTHS
    from facecloak.proto import enrollment_pb2 as pb
    from facecloak.proto.convert import OptionLimits, configs_from_options, options_from_config

    subtle = STRENGTHS["subtle"]
    assert subtle.visibility_weight > 0
    parse = build_parser().parse_args
    local = _enroll_config(parse(["enroll", "x.jpg", "-o", "x.fcmask", "--strength", "subtle"]))
    assert local.pgd.visibility_weight == subtle.visibility_weight
    assert (local.budget.eps * 255, local.budget.eps_focus * 255) == pytest.approx((subtle.eps, subtle.eps_focus))
    assert _enroll_config(parse(["enroll", "x.jpg", "-o", "x.fcmask"])).pgd.visibility_weight == 0
    pinned = _enroll_config(parse(["enroll", "x.jpg", "-o", "x.fcmask", "--strength", "subtle", "--visibility-weight", "1"]))
    assert pinned.pgd.visibility_weight == 1

    limits = OptionLimits(models=("sface", "ms1m", "faceplugin"))
    (remote,) = configs_from_options(pb.EnrollOptions(budget_preset=pb.BUDGET_PRESET_SUBTLE), EnrollConfig(), limits)
    assert remote.pgd.visibility_weight == subtle.visibility_weight and remote.budget == local.budget
    (override,) = configs_from_options(pb.EnrollOptions(budget_preset=pb.BUDGET_PRESET_SUBTLE, visibility_weight=0.5),
                                       EnrollConfig(), limits)
    assert override.pgd.visibility_weight == 0.5
    (standard,) = configs_from_options(pb.EnrollOptions(budget_preset=pb.BUDGET_PRESET_STANDARD), EnrollConfig(), limits)
    assert standard.pgd.visibility_weight == 0
    (trip,) = configs_from_options(options_from_config(local), EnrollConfig(), limits)
    assert trip.pgd == local.pgd and trip.budget == local.budget


@pytest.mark.slow  # exports a step graph (about a minute on 2 cores)
def test_penalised_step_graph_agrees_with_the_torch_step(tmp_path: Path) -> None:
    """The penalty's gradient traces into the exported step: one loop, two steppers, same result."""
    cfg = ExportConfig(out=tmp_path, models=("sface",), views=VIEWS)
    export_surrogates(cfg, log=lambda _: None)
    export_step_graph(cfg, PENALISED, log=lambda _: None)
    assert_one_loop_two_steppers_agree(tmp_path, real_problem(StepSpec(("sface",), VIEWS)), PENALISED)

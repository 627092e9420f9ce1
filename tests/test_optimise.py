import numpy as np
import pytest
import torch

from facecloak.faces import AlignedFrame, align_largest_face
from facecloak.models import torch_embedder
from facecloak.optimise import Budget, BudgetConfig, PGDConfig, budget_map, run_pgd, sticker_mask
from facecloak.optimise.torch_step import SurrogateTarget, TorchStepper
from facecloak.optimise.budget import border_taper


@pytest.fixture(scope="module")
def aligned(detector, selfie):
    a = align_largest_face(detector, selfie, AlignedFrame())
    frame_lms = np.hstack([a.face.landmarks, np.ones((5, 1))]) @ a.matrix.T
    return a.crop, frame_lms


def test_budget_map_levels_and_taper(aligned):
    crop, lms = aligned
    cfg = BudgetConfig()
    budget = budget_map(crop, lms, cfg)
    inner = budget[8:-8, 8:-8]
    assert set(np.unique(np.round(inner * 255)).tolist()) == {8.0, 32.0}  # true pixel budgets: 8 and 32 grey levels
    edge = cfg.eps_focus * 0.5 / cfg.border_taper_px  # the outermost pixel centre sits half a pixel in
    assert budget[0].max() <= edge + 1e-7 and budget[:, -1].max() <= edge + 1e-7  # fades out at the crop edge
    assert budget[4:-4, 4:-4].min() >= cfg.eps - 1e-7
    eyes = sticker_mask(lms, 112)
    for x, y in lms[:2]:
        assert eyes[int(y), int(x)]
    assert not eyes[5, 56]  # forehead top is not a sticker


def test_focus_switches_turn_eps_a_off(aligned):
    crop, lms = aligned
    plain = budget_map(crop, lms, BudgetConfig(stickers=False, highpass=False))
    assert np.round(plain.max() * 255) == 8
    assert np.allclose(border_taper(112, 4.0)[56, 56], 1.0)


def _targets(views):
    embed = torch_embedder("sface")
    with torch.no_grad():
        user = embed(views[:1])[0]
    rng = np.random.default_rng(0)
    near, far = (torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=128)).float(), dim=0) for _ in range(2))
    return [SurrogateTarget(embed, near, far, user)]


def test_pgd_respects_budget_is_deterministic_and_lowers_loss(aligned):
    crop, lms = aligned
    views = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255).repeat(4, 1, 1, 1)
    budget = Budget.of_face(crop, lms, BudgetConfig())
    cfg = PGDConfig(iterations=4, attention=True)
    step = TorchStepper(_targets(views), cfg)
    first = run_pgd(step, views.numpy(), budget, cfg, seed=3)
    again = run_pgd(step, views.numpy(), budget, cfg, seed=3)
    assert np.array_equal(first.delta, again.delta)
    assert (np.abs(first.delta) <= budget.map + 1e-7).all()
    assert np.abs(first.delta).max() > 8 / 255  # the focus pixels really get eps_A inside the loop
    assert first.losses[-1] < first.losses[0]
    assert 0.0 <= float(first.attention.min()) < 1.0 and float(first.attention.max()) <= 1.0  # alpha learns


def test_surrogate_balancing_equalises_each_models_pull(aligned):
    """With balancing, a surrogate whose loss is scaled up 1000x no longer decides the step alone."""
    crop, lms = aligned
    views = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    (target,) = _targets(views)
    loud = SurrogateTarget(lambda x: target.embed(x) * 1000, target.near * 1000, target.far * 1000, target.user)
    quiet = SurrogateTarget(lambda x: target.embed(x.flip(-1)), target.user, target.near, target.user)
    budget = Budget.of_face(crop, lms, BudgetConfig())

    def step(balance: bool) -> np.ndarray:
        cfg = PGDConfig(iterations=1, diversity_prob=0.0, random_start=False, balance_surrogates=balance)
        loud_only = run_pgd(TorchStepper([loud], cfg), views.numpy(), budget, cfg).delta
        both = run_pgd(TorchStepper([loud, quiet], cfg), views.numpy(), budget, cfg).delta
        return float((np.sign(both) == np.sign(loud_only)).mean())

    assert step(False) > 0.99  # unbalanced: the loud model's gradient is the whole step
    assert step(True) < 0.9  # balanced: the quiet model moves a real share of the pixels


def _luma_chroma(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    luma = x.mean(axis=0, keepdims=True)
    return luma, x - luma


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5])
def test_colour_project_holds_chroma_to_its_share_of_the_budget(ratio):
    """Luminance first: the grey part keeps the full budget, the chroma part at most ``ratio`` of it."""
    from facecloak.optimise.torch_step import colour_project

    gen = torch.Generator().manual_seed(0)
    bound = torch.rand(1, 16, 16, generator=gen).mul(32 / 255).expand(3, -1, -1)
    x = (torch.rand(3, 16, 16, generator=gen) * 2 - 1) * 3 * bound  # far outside the budget
    out = colour_project(x, bound, ratio).numpy()
    b = bound[0].numpy()
    assert (np.abs(out) <= b + 1e-7).all()  # still the per-pixel L-inf budget on every channel
    luma, chroma = _luma_chroma(out)
    assert (np.abs(chroma).max(axis=0) <= ratio * b + 1e-7).all()
    if ratio == 0:
        assert np.allclose(out, out[:1], atol=1e-7)  # grey only
    else:
        assert np.abs(chroma).max() > 0.5 * ratio * b.max()  # chroma is reduced, not dropped
    assert np.abs(luma).max() > 0.9 * b.max()  # luma keeps the whole budget
    small = x * 0.01  # inside both budgets already: untouched
    if ratio > 0:
        assert np.allclose(colour_project(small, bound, ratio).numpy(), small.numpy(), atol=1e-8)
    # ratio 1 is the plain per-channel clip (today's behaviour)
    assert torch.equal(colour_project(x, bound, 1.0), torch.maximum(torch.minimum(x, bound), -bound))


def test_pgd_with_reduced_chroma_keeps_it_in_budget(aligned):
    """The loop's result (what the mask carries) respects the chroma share, with attention on too."""
    crop, lms = aligned
    views = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    budget = Budget.of_face(crop, lms, BudgetConfig())
    for attention in (False, True):
        cfg = PGDConfig(iterations=2, chroma_ratio=0.25, attention=attention)
        result = run_pgd(TorchStepper(_targets(views), cfg), views.numpy(), budget, cfg, seed=1)
        _, chroma = _luma_chroma(result.delta)
        assert (np.abs(result.delta) <= budget.map + 1e-7).all()
        assert (np.abs(chroma).max(axis=0) <= 0.25 * budget.map + 1e-6).all()
        assert np.abs(result.delta).max() > 16 / 255  # the focus budget is still used (by luma)

"""EnrollConfig <-> facecloak.v1.EnrollOptions: the one place both the client and the server translate options.

Budgets travel in grey levels (0..255 scale) as doubles, so the CLI's ``--eps 8`` arrives as
exactly 8/255. Settings the API does not carry (frame, PGD step, ...) must stay at the core
defaults: the client refuses a config that changes them rather than silently dropping them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from ..enroll import MAX_SEED, EnrollConfig
from ..errors import BadOptionError
from ..mask.maskset import MAX_MEMBERS
from ..presets import STRENGTHS, Strength
from ..optimise.perceptual import PerceptualBudget
from . import enrollment_pb2 as pb

# Each preset's budget and visibility penalty (the core's strength table); UNSPECIFIED means the server default.
PRESETS: dict[int, Strength] = {
    pb.BUDGET_PRESET_SUBTLE: STRENGTHS["subtle"],
    pb.BUDGET_PRESET_STANDARD: STRENGTHS["standard"],
    pb.BUDGET_PRESET_STRONG: STRENGTHS["strong"],
}
MAX_GREY = 64.0


@dataclass(frozen=True)
class OptionLimits:
    """What a server accepts (also reported by Describe)."""

    models: tuple[str, ...]
    max_views: int = 32
    max_check_views: int = 16
    max_iterations: int = 100
    max_masks: int = 5


def _carried(config: EnrollConfig, base: EnrollConfig) -> EnrollConfig:
    """``base`` with only the fields the API carries taken from ``config``."""
    budget = replace(base.budget, eps=config.budget.eps, eps_focus=config.budget.eps_focus)
    pgd = replace(base.pgd, iterations=config.pgd.iterations, visibility_weight=config.pgd.visibility_weight)
    return replace(base, surrogates=config.surrogates, views=config.views, check_views=config.check_views,
                   seed=config.seed, budget=budget, pgd=pgd, perceptual=config.perceptual, members=config.members)


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    if a == b:
        return []
    if not hasattr(a, "__dataclass_fields__"):
        return [prefix.rstrip(".")]
    return [d for f in fields(a) for d in _differences(getattr(a, f.name), getattr(b, f.name), f"{prefix}{f.name}.")]


def options_from_config(config: EnrollConfig, mask_count: int = 1) -> pb.EnrollOptions:
    """Client side: the request options for ``config`` (BadOptionError if it cannot be expressed)."""
    lost = _differences(config, _carried(config, EnrollConfig()))
    if lost:
        raise BadOptionError(f"the enrollment API cannot carry these settings (keep the defaults): {', '.join(lost)}")
    if not 0 <= config.seed <= MAX_SEED:
        raise BadOptionError(f"seed must be in 0..{MAX_SEED} for remote enrollment, got {config.seed}")
    p = config.perceptual
    return pb.EnrollOptions(
        eps=config.budget.eps * 255.0, eps_focus=config.budget.eps_focus * 255.0,
        iterations=config.pgd.iterations, visibility_weight=config.pgd.visibility_weight, views=config.views, check_views=config.check_views,
        surrogates=list(config.surrogates), seed=config.seed, mask_count=mask_count, members=config.members,
        perceptual=None if p is None else pb.PerceptualBudget(eps=p.eps * 255.0, floor=p.floor, contrast=p.contrast),
    )


def _bounded(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BadOptionError(f"{name} must be in {low}..{high} on this server, got {value}")
    return value


def _grey(name: str, value: float) -> float:
    if not (math.isfinite(value) and 0 < value <= MAX_GREY):
        raise BadOptionError(f"{name} is in grey levels and must be in (0, {MAX_GREY:g}], got {value}")
    return value


def configs_from_options(options: pb.EnrollOptions, base: EnrollConfig, limits: OptionLimits) -> list[EnrollConfig]:
    """Server side: one validated EnrollConfig per requested mask (seeds seed, seed+1, ...)."""
    if options.budget_preset == pb.BUDGET_PRESET_UNSPECIFIED:
        eps, eps_focus = base.budget.eps * 255.0, base.budget.eps_focus * 255.0
        visibility_weight = base.pgd.visibility_weight
    elif options.budget_preset in PRESETS:
        preset = PRESETS[options.budget_preset]
        eps, eps_focus, visibility_weight = preset.eps, preset.eps_focus, preset.visibility_weight
    else:
        raise BadOptionError(f"unknown budget preset {options.budget_preset}")
    if options.HasField("eps"):
        eps = _grey("eps", options.eps)
        eps_focus = max(eps, eps_focus)
    if options.HasField("eps_focus"):
        eps_focus = _grey("eps_focus", options.eps_focus)
    if eps > eps_focus:
        raise BadOptionError(f"eps ({eps:g}) must not exceed eps_focus ({eps_focus:g})")
    surrogates = tuple(options.surrogates) or base.surrogates
    unknown = [s for s in surrogates if s not in limits.models]
    if unknown:  # duplicates are refused by EnrollConfig.validate below, as for local enrollment
        shown = [name[:32] + ("..." if len(name) > 32 else "") for name in surrogates[:8]]  # never echo huge input
        raise BadOptionError(f"surrogates must be names from {list(limits.models)}; got {shown}")
    pick = lambda name, default: getattr(options, name) if options.HasField(name) else default  # noqa: E731
    views = _bounded("views", pick("views", base.views), 1, limits.max_views)
    check_views = _bounded("check_views", pick("check_views", base.check_views), 0, limits.max_check_views)
    iterations = _bounded("iterations", pick("iterations", base.pgd.iterations), 1, limits.max_iterations)
    count = _bounded("mask_count", options.mask_count or 1, 1, limits.max_masks)
    members = _bounded("members", pick("members", base.members), 1, MAX_MEMBERS)
    if members > 1 and members * views > limits.max_views:  # a set's step embeds every member on every view
        raise BadOptionError(f"members x views must not exceed {limits.max_views} (each step embeds every member on every "
                             f"view), got {members} x {views}")
    seed = pick("seed", base.seed)
    visibility_weight = pick("visibility_weight", visibility_weight)
    if not (math.isfinite(visibility_weight) and 0 <= visibility_weight <= 100):
        raise BadOptionError(f"visibility_weight must be in [0, 100], got {visibility_weight}")
    if seed + count - 1 > MAX_SEED:
        raise BadOptionError(f"seed + mask_count - 1 must not exceed {MAX_SEED}")
    perceptual = base.perceptual
    if options.HasField("perceptual"):
        p = options.perceptual
        perceptual = PerceptualBudget(eps=_grey("perceptual.eps", p.eps) / 255.0, floor=p.floor, contrast=p.contrast)
        perceptual.validate()
    config = replace(
        base, surrogates=surrogates, views=views, check_views=check_views,
        budget=replace(base.budget, eps=eps / 255.0, eps_focus=eps_focus / 255.0),
        pgd=replace(base.pgd, iterations=iterations, visibility_weight=visibility_weight), perceptual=perceptual,
        members=members,
    )
    configs = [replace(config, seed=seed + i) for i in range(count)]
    configs[0].validate()
    return configs

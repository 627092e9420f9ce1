"""Named cloak strengths and the default surrogate ensemble, importable without numpy or OpenCV (the CLI
builds its parser from them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Strength:
    """A named point on the protection-vs-visibility curve: the budget in grey levels and the weight of
    the visibility penalty (PGDConfig.visibility_weight)."""

    eps: float
    eps_focus: float
    visibility_weight: float = 0.0


# The CLI's --strength and the API's BudgetPreset both read this table. Standard and strong are points
# on the benchmark's PSR-vs-budget curve (docs/eval/report.md, 100 people, sface -> facenet black-box
# top-1 PSR / SSIM: 78.3 % / 0.909, 95.9 % / 0.873). Subtle keeps the standard budget and lets the
# visibility penalty take out what the eye sees. Against the 4 / 16 budget it replaced (docs/eval.md,
# "Visibility against protection", 24 people, the default ensemble, black-box top-1 PSR): face FLIP 0.112
# vs 0.116, 14.0 % vs 18.1 % of face pixels visible, facenet 53.1 % vs 34.4 %, sirius 36.5 % vs 25.0 %
# (paired gains +18.8 and +11.5 points, intervals above zero); its face SSIM is lower (0.813 vs 0.876).
STRENGTHS: dict[str, Strength] = {"subtle": Strength(8.0, 32.0, 4.0), "standard": Strength(8.0, 32.0),
                                  "strong": Strength(12.0, 48.0)}

# The shipped surrogate ensemble, chosen by measurement (docs/eval.md, "Transfer techniques"): the
# licence-clear recognisers, three 112-px MobileFaceNets of different training sets. Against the two
# recognisers outside it it protects more than SFace + FaceNet did against those outside that, at the same
# visibility and about the same enrollment time on the default backend.
DEFAULT_SURROGATES: tuple[str, ...] = ("sface", "ms1m", "faceplugin")

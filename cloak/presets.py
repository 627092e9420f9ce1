"""Named cloak strengths and the default surrogate ensemble, importable without numpy or OpenCV (the CLI
builds its parser from them)."""

from __future__ import annotations

# Strength presets: (eps, eps_A) in grey levels, points on the benchmark's PSR-vs-budget curve
# (docs/eval/report.md, 100 people, sface -> facenet black-box top-1 PSR / SSIM: 17.2 % / 0.960,
# 78.3 % / 0.909, 95.9 % / 0.873). The CLI's --strength and the API's BudgetPreset both read this table.
STRENGTHS: dict[str, tuple[float, float]] = {"subtle": (4.0, 16.0), "standard": (8.0, 32.0), "strong": (12.0, 48.0)}

# The shipped surrogate ensemble, chosen by measurement (docs/eval.md, "Transfer techniques"): the
# licence-clear recognisers, three 112-px MobileFaceNets of different training sets. Against the two
# recognisers outside it it protects more than SFace + FaceNet did against those outside that, at the same
# visibility and about the same enrollment time on the default backend.
DEFAULT_SURROGATES: tuple[str, ...] = ("sface", "ms1m", "faceplugin")

"""results.json -> a Markdown report with tables and small PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..apply.quality import FACE_MARGIN, FLIP_VISIBLE
from ..enroll import DEFAULT_SURROGATES
from ..models import REGISTRY, get_card
from .protocol import ensemble_label, members_of
from .summary import box
from .uncertainty import Interval, gap_interval

LABELS = {
    "clean": "clean (no cloak)", "noise": "uniform noise",
    "centre_uniform": "class centre, uniform budget (OPOM)", "centre": "class centre + our focus budget",
    "pgd": "per-image PGD (reference)", "ours_bm": "ours, eps_A = eps", "ours": "ours (full)",
}
EXAMPLE_METHODS = ("clean", "noise", "centre_uniform", "centre", "ours_bm", "ours", "pgd")
REPORT = "report.md"
BAR = ("The bar from the issue: the public research code's loop (SFace surrogate, 8 augmented views, same held-out "
       "protocol, JPEG 90) protected 6% of probes at top-1 and 1% at top-5 against an unseen recogniser, at SSIM 0.96.")
INTERVALS = ("Intervals: 95% bootstrap over people (one mask serves all of a person's probes, so people, not probes, "
             "are resampled); a gap's interval resamples the same people for both rows. \"tie\": the gap's interval "
             "contains zero.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _person_minutes(results: dict) -> float:
    return sum(sum(stages.values()) for stages in results["seconds"].get("per_person", {}).values()) / 60


def _jpeg_label(q: int) -> str:
    return "none" if q == 0 else str(q)


def _budget_label(row: dict) -> str:
    return "–" if row["eps"] is None else f"{row['eps']:g}/{row['eps_focus']:g}"


def first_surrogate(cfg: dict) -> str | None:
    """The label whose rows the plots and examples show: the first single surrogate, else the first ensemble."""
    if cfg["surrogates"]:
        return cfg["surrogates"][0]
    return ensemble_label(cfg["ensembles"][0]) if cfg.get("ensembles") else None


def main_rows(results: dict) -> list[dict]:
    cfg = results["config"]
    return [r for r in results["rows"] if r["jpeg"] == cfg["jpeg"][0] and r["scale"] == 1.0]


def _interval_label(row: dict, key: str = "top1_psr") -> str:
    ci = row.get(f"{key}_ci")
    return "–" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def with_interval(row: dict, key: str) -> str:
    """A share and its 95% interval, e.g. "53.0% (41.2–64.0)"; – for rows recorded before it was measured."""
    return "–" if row.get(key) is None else f"{_pct(row[key])} ({_interval_label(row, key)})"


CLOAKED = ("Cloaked photos against each other. **Cloaked gallery**: the attacker holds one labelled cloaked "
           "photo of the person (instead of their clean photos) and the usual clean photos of everyone else; each "
           "other cloaked photo of the person is a probe (every ordered pair of the person's probes, top-1, ties to "
           "the attacker; a gallery photo with no face found is not used). **Linked**: share of same-person cloaked "
           "pairs the attacker verifies at its FAR threshold (a pair with a face not found is not linked); "
           "lower is better. Clean rows: the same attacks on clean photos, the reference. With a mask set the "
           "cloaked-gallery trials are also split by whether the gallery photo carries **another member** than the "
           "probe or the **same member** (under the per-photo rotation about 1/K of trials share a member).")


def _total(per_person: Sequence[int | None] | None) -> str:
    counts = [n for n in per_person or () if n is not None]
    return str(sum(counts)) if counts else "–"


def cloaked_table(rows: Sequence[dict]) -> str:
    """Clean-gallery top-1 PSR beside the cloaked-gallery attack and linkability, with intervals."""
    lines = ["| method | surrogate | target | box | clean-gallery top-1 PSR (95% CI) | cloaked-gallery top-1 PSR (95% CI) "
             "| other member | same member | linked pairs (95% CI) | trials | pairs |", "|" + "---|" * 11]
    for r in rows:
        counts = [_total(r.get(key)) for key in ("person_trials", "person_pairs")]
        lines.append(f"| {LABELS.get(r['method'], r['method'])} | {r['surrogate']} | {r['target']} | {r['box']} | "
                     f"{with_interval(r, 'top1_psr')} | {with_interval(r, 'cloaked_gallery_top1_psr')} | "
                     f"{with_interval(r, 'cloaked_gallery_other_member_top1_psr')} | "
                     f"{with_interval(r, 'cloaked_gallery_same_member_top1_psr')} | "
                     f"{with_interval(r, 'linked')} | {counts[0]} | {counts[1]} |")
    return "\n".join(lines)


def cloaked_section(results: dict) -> list[str]:
    """The cloaked-photo attacks on the black-box rows and the clean/noise references; none for older results."""
    rows = [r for r in main_rows(results) if r["box"] in ("black-box", "none")]
    if all(r.get("cloaked_gallery_top1_psr") is None for r in rows):
        return []
    return [f"## Cloaked-gallery attack and linkability: black-box rows, JPEG {_jpeg_label(results['config']['jpeg'][0])}",
            "", CLOAKED, "", cloaked_table(rows), ""]


def table(rows: Sequence[dict], intervals: bool = False) -> str:
    """One line per row; ``intervals`` adds the top-1 PSR's 95% people-bootstrap interval."""
    ci_head, ci_cell = (" 95% CI |", lambda r: f" {_interval_label(r)} |") if intervals else ("", lambda r: "")
    head = (f"| method | surrogate | target | box | eps/eps_A | top-1 PSR |{ci_head} top-5 PSR | verif. PSR @FAR | no face "
            f"| face FLIP | face > {FLIP_VISIBLE:g} | face SSIM | SSIM | PSNR dB | probes |")
    lines = [head, "|" + "---|" * (16 if intervals else 15)]
    for r in rows:
        lines.append(
            f"| {LABELS.get(r['method'], r['method'])} | {r['surrogate']} | {r['target']} | {r['box']} | "
            f"{_budget_label(r)} | {_pct(r['top1_psr'])} |{ci_cell(r)} {_pct(r['top5_psr'])} | {_pct(r['verification_psr'])} | "
            f"{_pct(r['no_face'])} | {_num(r.get('flip_mean'), '.3f')} | {_pct(r.get('flip_visible'))} | "
            f"{_num(r.get('face_ssim'), '.3f')} | {_num(r['ssim'], '.3f')} | {_num(r['psnr'], '.1f')} | {r['probes']} |"
        )
    return "\n".join(lines)


def row_models(row: dict, cfg: dict) -> frozenset[str]:
    """The surrogates a row's masks were learned from (recorded; older results: read from the label)."""
    return frozenset(row["models"] if "models" in row else members_of(row["surrogate"], cfg["surrogates"]))


def enroll_seconds(results: dict, label: str) -> float | None:
    """Mean seconds per person of our enrollment from ``label`` (learning the mask + applying it to the probes)."""
    per = [stages[f"ours/{label}"] for stages in results["seconds"].get("per_person", {}).values() if f"ours/{label}" in stages]
    return float(np.mean(per)) if per else None


def ensemble_table(results: dict, rows: Sequence[dict]) -> str:
    """Our full method's rows, one per (mask's surrogates, attacker), beside the attacker's clean and noise rows."""
    cfg = results["config"]
    find = {(r["method"], r["target"]): r for r in main_rows(results) if r["method"] in ("clean", "noise")}
    lines = [f"| attacker | mask learned from | box | top-1 PSR | 95% CI | top-5 PSR | verif. PSR @FAR {cfg['far']:g} "
             f"| clean / noise top-1 | SSIM | face SSIM | face FLIP | face > {FLIP_VISIBLE:g} | enroll s/person | probes |",
             "|" + "---|" * 14]
    for r in rows:
        base = [_pct(find[(m, r["target"])]["top1_psr"]) if (m, r["target"]) in find else "–" for m in ("clean", "noise")]
        seconds = enroll_seconds(results, r["surrogate"])
        lines.append(
            f"| {r['target']} | {r['surrogate']} | {r['box']} | {_pct(r['top1_psr'])} | {_interval_label(r)} | "
            f"{_pct(r['top5_psr'])} | {_pct(r['verification_psr'])} | {' / '.join(base)} | {_num(r['ssim'], '.3f')} | "
            f"{_num(r.get('face_ssim'), '.3f')} | {_num(r.get('flip_mean'), '.3f')} | {_pct(r.get('flip_visible'))} | "
            f"{_num(seconds, '.0f')} | {r['probes']} |")
    return "\n".join(lines)


def leave_one_out_rows(results: dict) -> list[dict]:
    """Per attacker, our mask learned from every other target of the run; black-box rows only."""
    cfg = results["config"]
    everyone = frozenset(cfg["targets"])
    rows = [r for r in main_rows(results) if r["method"] == "ours" and r["box"] == "black-box"
            and r["target"] not in row_models(r, cfg) and row_models(r, cfg) == everyone - {r["target"]}]
    order = {t: i for i, t in enumerate(cfg["targets"])}
    return sorted(rows, key=lambda r: order[r["target"]])


def ensemble_sections(results: dict) -> list[str]:
    """Leave-one-out matrix, the shipped default against every recogniser outside it, every ensemble's black-box rows."""
    cfg = results["config"]
    headline = _jpeg_label(cfg["jpeg"][0])
    balance = ("with per-surrogate gradient balancing (`--balance`)" if cfg.get("balance")
               else "without per-surrogate gradient balancing")
    ours = [r for r in main_rows(results) if r["method"] == "ours"]
    parts: list[str] = []
    loo = leave_one_out_rows(results)
    if loo:
        parts += [f"## Leave-one-out: each recogniser attacks a mask learned from all the others (JPEG {headline})", "",
                  f"Every row is black-box: the attacker is not among the models the mask was learned from ({balance}). "
                  "Enroll s/person: our enrollment from that ensemble plus applying the mask to the probes, "
                  "mean over people (stage timings; shared CPU, so indicative).", "",
                  ensemble_table(results, loo), ""]
        if any(r.get("cloaked_gallery_top1_psr") is not None for r in loo):
            clean = {r["target"]: r for r in main_rows(results) if r["method"] == "clean"}
            paired = [x for r in loo for x in ([clean[r["target"]]] if r["target"] in clean else []) + [r]]
            parts += ["The same rows against cloaked photos, each after its attacker's clean row. " + CLOAKED, "",
                      cloaked_table(paired), ""]
    default = frozenset(DEFAULT_SURROGATES)
    shipped = [r for r in ours if row_models(r, cfg) == default]
    if shipped:
        outside = [r for r in shipped if r["box"] == "black-box"]
        absent = [m for m in REGISTRY if m not in default and m not in {r["target"] for r in outside}]
        parts += [f"## The shipped default ({ensemble_label(DEFAULT_SURROGATES)}) vs every recogniser outside it (JPEG {headline})", ""]
        parts += [ensemble_table(results, outside)] if outside else ["No recogniser outside the default was attacked in this run."]
        if absent:
            parts += ["", "Not attacked in this run: " + ", ".join(
                f"{m}{'' if get_card(m).shippable else ' (evaluation only)'}" for m in absent) + "."]
        parts += [""]
    many = [r for r in ours if len(row_models(r, cfg)) >= 2 and r["box"] == "black-box"]
    if many:
        many.sort(key=lambda r: (len(row_models(r, cfg)), r["surrogate"], r["target"]))
        parts += [f"## Every ensemble vs the recognisers outside it (JPEG {headline}; black-box rows only)", "",
                  f"Our full method {balance}. Only these rows can support a transfer claim: each attacker "
                  "was never used in learning the mask it attacks.", "", ensemble_table(results, many), ""]
    return parts


AIM_PSR, AIM_SSIM = 0.80, 0.90  # the issue's aim: black-box top-1 PSR >= 80% at SSIM >= 0.90 (headline JPEG)


def _verdict(ours: dict, candidates: Sequence[dict]) -> str:
    """Does ``ours`` beat a baseline on top-1 PSR at equal or better SSIM?

    ``candidates`` are the baseline's rows at each budget tested; it is judged at the largest one
    (lowest SSIM), its strongest. If even that is less visible than ours, the table says so.
    """
    if not candidates:
        return "–"
    other = min(candidates, key=lambda r: r["ssim"] if r["ssim"] is not None else 1.0)
    ci = paired_gap(ours, other)
    gap = _gap(ours, other, ci)
    ssims = f"SSIM {_num(ours['ssim'], '.3f')} vs {_num(other['ssim'], '.3f')}"
    if ours["ssim"] is None or other["ssim"] is None:
        return f"{gap}, SSIM unknown"
    if ours["ssim"] < other["ssim"] - 5e-4:
        return f"{gap} at lower SSIM ({ssims}, its largest budget tested)"
    return f"{_beats(ours, other, ci)} ({gap}, {ssims})"


def paired_gap(ours: dict, other: dict) -> Interval | None:
    """The paired people-bootstrap interval of ours - other, or None for rows without per-person counts."""
    if not (ours.get("person_top1") and other.get("person_top1")):
        return None
    return gap_interval(ours["person_top1"], other["person_top1"], ours["person_probes"])


def _gap(ours: dict, other: dict, ci: Interval | None) -> str:
    points = f"{100 * (ours['top1_psr'] - other['top1_psr']):+.1f} pts"
    return points if ci is None else f"{points}, 95% CI {100 * ci.low:+.1f}..{100 * ci.high:+.1f}"


def _beats(ours: dict, other: dict, ci: Interval | None) -> str:
    """yes / no, or "tie" when the paired interval ``ci`` of the gap contains zero."""
    if ci is not None and ci.spans_zero():
        return "tie"
    return "yes" if ours["top1_psr"] > other["top1_psr"] else "no"


def aim_section(results: dict) -> list[str]:
    """Per black-box direction: the aim, the baselines ours must beat, and what limits a miss (from the rows)."""
    rows = main_rows(results)
    find = {(r["method"], r["surrogate"], r["target"]): r for r in rows}
    headline = results["config"]["jpeg"][0]

    def budgets(method: str, surrogate: str, target: str) -> list[dict]:
        return [r for r in results["rows"] if (r["method"], r["surrogate"], r["target"], r["jpeg"]) == (method, surrogate, target, headline)]

    lines = ["| surrogate -> target | ours top-1 (95% CI) / SSIM | aim | beats noise | beats OPOM class centre (uniform) "
             "| vs class centre + our focus budget |", "|" + "---|" * 6]
    notes = []
    for r in (r for r in rows if r["method"] == "ours" and r["box"] == "black-box"):
        s, t = r["surrogate"], r["target"]
        met = r["top1_psr"] >= AIM_PSR and (r["ssim"] or 0) >= AIM_SSIM
        lines.append(f"| {s} -> {t} | {_pct(r['top1_psr'])} ({_interval_label(r)}) / {_num(r['ssim'], '.3f')} | "
                     f"{'met' if met else 'NOT met'} | "
                     f"{_verdict(r, budgets('noise', '-', t))} | {_verdict(r, budgets('centre_uniform', s, t))} | "
                     f"{_verdict(r, budgets('centre', s, t))} |")
        if met:
            continue
        per_image, white = find.get(("pgd", s, t)), find.get(("ours", t, t))
        ensemble = find.get(("ours", "ensemble", t))
        parts = [f"**{s} -> {t}: {_pct(r['top1_psr'])} < {AIM_PSR:.0%}.**"]
        if per_image:
            parts.append(f"Per-image PGD from the same surrogate and budget reaches {_pct(per_image['top1_psr'])}: "
                         f"one mask that must also hold on unseen photos costs {100 * (per_image['top1_psr'] - r['top1_psr']):.0f} points.")
        if white:
            parts.append(f"Even white-box (mask optimised on {t} itself) a universal mask reaches {_pct(white['top1_psr'])}"
                         + (f", the ensemble {_pct(ensemble['top1_psr'])}" if ensemble else "") + ".")
        notes.append(" ".join(parts))
    notes.append(INTERVALS)
    return lines + [line for note in notes for line in ("", note)]


def plot_psr_vs_budget(results: dict, path: Path) -> bool:
    """Top-1 PSR against eps_A for ours (first surrogate) and noise, per target; False if one budget only."""
    cfg = results["config"]
    rows = [r for r in results["rows"] if r["jpeg"] == cfg["jpeg"][0]]
    sweep = [r for r in rows if r["method"] in ("ours", "noise") and r["surrogate"] in (first_surrogate(cfg), "-")]
    if len({r["scale"] for r in sweep}) < 2:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=90)
    for method, style in (("ours", "-o"), ("noise", ":s")):
        for target in cfg["targets"]:
            pts = sorted((r["eps_focus"], r["top1_psr"], r["box"]) for r in sweep if r["method"] == method and r["target"] == target)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=f"{LABELS[method]} → {target} ({pts[0][2]})")
    for r in rows:  # single-budget rows as markers at their largest budget
        if r["method"] in ("ours_bm", "centre_uniform") and r["surrogate"] == first_surrogate(cfg):
            marker = "x" if r["method"] == "ours_bm" else "+"
            ax.plot([r["eps_focus"]], [100 * r["top1_psr"]], marker, ms=8, label=f"{LABELS[r['method']]} → {r['target']}")
    ax.set_xlabel("eps_A (grey levels; eps = eps_A / 4; uniform budgets: eps)")
    ax.set_ylabel(f"top-1 PSR % (JPEG {_jpeg_label(cfg['jpeg'][0])})")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")  # low budgets, high PSR: the empty corner
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_psr_vs_flip(results: dict, path: Path) -> bool:
    """Top-1 PSR against what people see (face FLIP mean), black-box rows and noise, per target, at the
    headline upload: every method and budget as a point, each method's budgets joined; False without FLIP."""
    cfg = results["config"]
    rows = [r for r in results["rows"] if r["jpeg"] == cfg["jpeg"][0] and r.get("flip_mean") is not None
            and r["box"] in ("black-box", "none") and r["method"] != "clean"]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=90)
    markers = dict(zip(LABELS, "o.s^vDP*x"))
    for target in cfg["targets"]:
        for method in LABELS:
            for surrogate in sorted({r["surrogate"] for r in rows if r["method"] == method and r["target"] == target}):
                pts = sorted((r["flip_mean"], r["top1_psr"]) for r in rows
                             if (r["method"], r["target"], r["surrogate"]) == (method, target, surrogate))
                if pts:
                    source = "" if surrogate == "-" else f"{surrogate} "
                    ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "-" + markers[method], ms=5,
                            label=f"{LABELS[method]}, {source}→ {target}")
    ax.set_xlabel("face FLIP mean (what people see; lower is less visible)")
    ax.set_ylabel(f"black-box top-1 PSR % (JPEG {_jpeg_label(cfg['jpeg'][0])})")
    ax.set_ylim(-2, 102)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_psr_vs_jpeg(results: dict, path: Path) -> bool:
    """Top-1 PSR against upload JPEG quality, each method with the first surrogate, per target."""
    cfg = results["config"]
    if len(cfg["jpeg"]) < 2:
        return False
    first = first_surrogate(cfg)
    rows = [r for r in results["rows"] if r["scale"] == 1.0 and r["surrogate"] in (first, "-")]
    plt = _pyplot()
    targets = cfg["targets"]
    fig, axes = plt.subplots(1, len(targets), figsize=(4 * len(targets), 3.2), dpi=90, squeeze=False, sharey=True)
    qualities = sorted(set(cfg["jpeg"]), key=lambda q: -(q or 101))
    for ax, target in zip(axes[0], targets):
        for method in LABELS:
            by_q = {r["jpeg"]: r["top1_psr"] for r in rows if r["method"] == method and r["target"] == target}
            if by_q:
                ax.plot(range(len(qualities)), [100 * by_q.get(q, np.nan) for q in qualities], "-o", label=LABELS[method])
        ax.set_title(f"target {target} ({box(first, target, cfg['surrogates'])} for surrogate {first})", fontsize=8)
        ax.set_xticks(range(len(qualities)), [_jpeg_label(q) for q in qualities])
        ax.set_xlabel("upload JPEG quality")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 PSR %")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def save_examples(tiles: Sequence[tuple[str, np.ndarray]], path: Path, side: int = 160) -> None:
    """Clean and cloaked versions of one held-out photo side by side (small thumbnails)."""
    import cv2

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tiles), figsize=(1.9 * len(tiles), 2.2), dpi=90)
    for ax, (label, img) in zip(np.atleast_1d(axes), tiles):
        scale = side / max(img.shape[:2])
        small = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        ax.imshow(small)
        ax.set_title(label, fontsize=6)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_visibility_grid(faces: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray]]], path: Path, zoom: int = 2) -> None:
    """One row per person: clean face, then per cloak (``{label: cloaked face}``) the cloaked face and its FLIP
    error map (magma, 0..1), each at the photo's own resolution enlarged ``zoom`` x with nearest-neighbour
    pixels (no smoothing hides or adds speckle)."""
    from ..apply import flip_error_map

    plt = _pyplot()
    dpi = 100  # the figure is sized so that one enlarged pixel is ``zoom`` pixels of the PNG (room for titles)
    side_w = max(c.shape[1] for _, c, _ in faces) * zoom + 20
    side_h = max(c.shape[0] for _, c, _ in faces) * zoom + 30
    columns = 1 + 2 * max(len(cloaks) for _, _, cloaks in faces)
    fig, axes = plt.subplots(len(faces), columns, figsize=(columns * side_w / dpi, len(faces) * side_h / dpi), dpi=dpi,
                             squeeze=False)
    for row, (name, clean, cloaks) in zip(axes, faces):
        tiles = [("clean", clean)]
        for label, cloaked in cloaks.items():
            error = flip_error_map(clean, cloaked)
            tiles += [(label, cloaked), (f"FLIP mean {error.mean():.3f}, >0.2: {np.mean(error > 0.2):.0%}", error)]
        for ax, (label, img) in zip(row, tiles):
            big = np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)
            ax.imshow(big, cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest") if img.ndim == 2 else ax.imshow(big, interpolation="nearest")
            ax.set_title(label if label != "clean" else f"{name}: clean", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def transfer_label(cfg: dict) -> str:
    """Our method's transfer settings where a run overrides the core's defaults ("" where none does)."""
    formats = {"eot_rotation": "rotation EOT up to {:g} degrees", "eot_jpeg": "JPEG EOT at quality {:g}",
               "skip_gradient": "skip gradient {:g}", "visibility_weight": "visibility penalty weight {:g}",
               "eot_spectrum": "spectrum simulation rho {:g}", "gradient_blur": "gradient blur sigma {:g} px",
               "member_separation": "member separation {:g}", "view_separation": "view separation {:g}",
               "bf16_surrogates": "surrogates in bfloat16", "bf16_convolutions": "convolutions on bfloat16 arithmetic"}
    parts = [text.format(cfg[key]) for key, text in formats.items() if cfg.get(key) not in (None, False)]
    return f" Our method's transfer settings (overriding the core's): {', '.join(parts)}." if parts else ""


def write_report(results: dict, out_dir: Path, title: str = "FaceCloak protection benchmark") -> Path:
    """report.md plus the plots it links, next to results.json."""
    cfg = results["config"]
    ds = results["dataset"]
    plots = []
    if plot_psr_vs_budget(results, out_dir / "psr_vs_budget.png"):
        plots.append(("PSR vs budget", "psr_vs_budget.png"))
    if plot_psr_vs_jpeg(results, out_dir / "psr_vs_jpeg.png"):
        plots.append(("PSR vs JPEG quality", "psr_vs_jpeg.png"))
    if plot_psr_vs_flip(results, out_dir / "psr_vs_flip.png"):
        plots.append(("Protection vs visibility: black-box top-1 PSR against face FLIP", "psr_vs_flip.png"))
    if (out_dir / "examples.png").exists():
        plots.append(("Examples: one held-out photo, clean and cloaked (before upload)", "examples.png"))
    if (out_dir / "visibility_grid.png").exists():
        plots.append(("What people see: the first held-out photo of the first people in the benchmark's (seeded random) "
                      "order, face box + 10 %, clean | ours | FLIP error", "visibility_grid.png"))
    thresholds = ", ".join(f"{m} {t['threshold']:.3f} ({t['impostor_pairs']:,} clean impostor pairs)"
                           for m, t in results["thresholds"].items())
    rows = main_rows(results)
    jpeg_rows = [r for r in results["rows"] if r["jpeg"] != cfg["jpeg"][0] and r["scale"] == 1.0]
    budget_rows = [r for r in results["rows"] if r["jpeg"] == cfg["jpeg"][0] and r["scale"] != 1.0]
    parts = [
        f"# {title}",
        "",
        f"{len(ds['people'])} LFW people x {cfg['probes']} held-out photos each (mask learned from photo 1 only). "
        f"Attacker gallery: {ds['gallery']['photos']} clean photos of {ds['gallery']['identities']} identities "
        f"({ds['gallery']['lfw_people']} LFW people, {ds['gallery']['distractors']} distractors; the probe's own clean "
        f"photo left out). Anchors: `{cfg['anchor_source']}` ({ds['anchors']['identities']} identities"
        + (", disjoint from the attacker's distractors)." if cfg["anchor_source"] == "split" else ", SHARED with the attacker's distractors: inflated).")
        + f" Upload: resize x{cfg['resize']} then JPEG {_jpeg_label(cfg['jpeg'][0])}; the attacker re-detects "
        f"(YuNet) and re-aligns every photo and embeds with ONNX Runtime. Budget eps = {cfg['eps'] * 255:.0f}, "
        f"eps_A = {cfg['eps_focus'] * 255:.0f} grey levels (the OPOM uniform-budget baseline: "
        f"{cfg.get('uniform_eps', 0) * 255:.0f} everywhere).{transfer_label(cfg)} Verification thresholds at FAR {cfg['far']:g}: {thresholds}. "
        f"Seed {cfg['seed']}; {_person_minutes(results):.0f} min of per-person compute "
        f"({results.get('environment', {}).get('threads', '?')} thread(s); stage timings in results.json).",
        "",
        f"## At a glance: black-box rows (target never used in optimisation), JPEG {_jpeg_label(cfg['jpeg'][0])}",
        "",
        table([r for r in rows if r["box"] in ("black-box", "none")], intervals=True),
        "",
        BAR,
        "",
        *cloaked_section(results),
        *ensemble_sections(results),
        f"## Against the aim (black-box top-1 PSR >= {AIM_PSR:.0%} at SSIM >= {AIM_SSIM}, JPEG {_jpeg_label(cfg['jpeg'][0])})",
        "",
        *aim_section(results),
        "",
        f"## All rows: JPEG {_jpeg_label(cfg['jpeg'][0])}, resize x{cfg['resize']}",
        "",
        table(rows),
        "",
        "PSR = share of cloaked probes whose true identity is NOT in the attacker's top-k (higher is better). "
        "`no face` = the attacker's detector found no face (counted as protected). SSIM/PSNR: cloaked vs clean photo at "
        "full resolution, before upload. Face columns (what people see), on the defender's detected face box grown by "
        f"{FACE_MARGIN:.0%} on each side: NVIDIA FLIP's mean error, the share of face pixels whose error exceeds "
        f"{FLIP_VISIBLE:g}, and SSIM (probes with a detected face; – for runs recorded before they were measured). "
        f"LPIPS: {results['lpips']}.",
    ]
    for q in cfg["jpeg"][1:]:
        parts += ["", f"## Upload JPEG {_jpeg_label(q)} (resize x{cfg['resize']})", "",
                  table([r for r in jpeg_rows if r["jpeg"] == q])]
    if budget_rows:
        parts += ["", "## Other budgets (eps, eps_A scaled together)", "", table(budget_rows)]
    for name, file in plots:
        parts += ["", f"## {name}", "", f"![{name}]({file})"]
    path = out_dir / REPORT
    path.write_text("\n".join(parts) + "\n")
    return path

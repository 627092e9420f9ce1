"""Per-person records -> one row of figures per (method, surrogate, budget scale, target model, JPEG)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from .metrics import NOT_FOUND, cloaked_gallery_counts, linked_counts, protected_at_k, psr_at_k, verification_psr
from .protocol import METHODS, EvalConfig, members_of
from .uncertainty import Interval, psr_interval

# Per-probe face figures a record keeps (facecloak.apply.Quality's names), pooled into rows under the same keys.
FACE_FIELDS = ("face_ssim", "flip_mean", "flip_p99", "flip_visible")


def box(surrogate: str, target: str, surrogates: Sequence[str], models: Sequence[str] | None = None) -> str:
    """white-box if the target model was used in optimisation, black-box if never, none for no optimisation.

    Decided by membership: ``models`` are the surrogates the row's masks say they were learned from
    (records keep them); without them, the members the label names (``members_of``).
    """
    used = set(members_of(surrogate, surrogates) if models is None else models)
    if not used:
        return "none"
    return "white-box" if target in used else "black-box"


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def _budget(method: str, scale: float, cfg: EvalConfig) -> dict[str, float | None]:
    """eps and eps_A in grey levels (None for the clean photos)."""
    if method == "clean":
        return {"eps": None, "eps_focus": None}
    if method == "centre_uniform":
        return {"eps": round(cfg.uniform_eps * 255, 2), "eps_focus": round(cfg.uniform_eps * 255, 2)}
    focus = cfg.eps if method == "ours_bm" else cfg.eps_focus
    return {"eps": round(cfg.eps * scale * 255, 2), "eps_focus": round(focus * scale * 255, 2)}


def _per_person(counts: Sequence[tuple[int, int, int]], people: int) -> tuple[list, list, Interval | None]:
    """(index, hits, total) per person -> hits and totals in ``records`` order (None: no figure for that
    person) and the pooled share's people-bootstrap interval (None: no person with a total)."""
    hits, totals = [None] * people, [None] * people
    for index, hit, total in counts:
        hits[index], totals[index] = hit, total
    return hits, totals, psr_interval(hits, totals) if any(totals) else None


def _share(key: str, ci: Interval | None) -> dict:
    """A pooled share and its interval as row fields ``key`` and ``key_ci`` (None when not measured)."""
    return {key: None if ci is None else ci.value, f"{key}_ci": None if ci is None else [ci.low, ci.high]}


def summarise(records: Sequence[dict], cfg: EvalConfig, thresholds: dict[str, float]) -> list[dict]:
    """Pool every person's probes per row. PSNR skips identical photos (infinite PSNR), face figures probes
    with no face found by the defender.

    Each row also keeps its per-person counts, in ``records`` order, None where a person lacks the row
    (or, for the cloaked-photo figures, was recorded before they were kept), so intervals and paired gaps
    can be drawn later: top-1 (``person_top1`` protected of ``person_probes``), cloaked-gallery attack
    (``person_cloaked_gallery`` protected of ``person_trials``) and linkability (``person_linked`` of
    ``person_pairs``). With a mask set the cloaked-gallery attack is also split into the trials whose gallery
    photo carries another member than the probe and those that share it (``cloaked_gallery_other_member_top1_psr``,
    ``cloaked_gallery_same_member_top1_psr``): a shared member is the one-mask attack again.
    """
    pooled: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for index, record in enumerate(records):
        for v in record["variants"]:
            for jpeg, per_model in v["attack"].items():
                for target, out in per_model.items():
                    acc = pooled[(v["method"], v["surrogate"], v["scale"], target, int(jpeg))]
                    acc["person_top1"].append((index, int(protected_at_k(out["rank"], 1).sum()), len(out["rank"])))
                    if "pairs" in out:  # absent from records written before the cloaked-photo attacks were kept
                        found = np.asarray(out["rank"]) != NOT_FOUND
                        pairs = [np.nan if p is None else p for p in out["pairs"]]
                        other = [np.nan if o is None else o for o in out["other"]]
                        acc["person_cloaked"].append((index, *cloaked_gallery_counts(pairs, other, found)))
                        acc["person_linked"].append((index, *linked_counts(pairs, thresholds[target])))
                        if "members" in v:  # a mask set: split the attack by whether both photos share a member
                            for key, same in (("person_cloaked_same", True), ("person_cloaked_other", False)):
                                acc[key].append((index, *cloaked_gallery_counts(pairs, other, found, v["members"], same)))
                    acc["rank"] += out["rank"]
                    acc["genuine"] += out["genuine"]
                    acc["ssim"] += v["ssim"]
                    acc["psnr"] += v["psnr"]
                    if "learned_from" in v:  # absent from records written before masks' models were kept
                        acc["models"].append(tuple(v["learned_from"]))
                    for key in FACE_FIELDS:  # absent from records written before face figures were kept
                        acc[key] += v.get(key, [])
    rows = []
    for (method, surrogate, scale, target, jpeg), acc in pooled.items():
        ranks = acc["rank"]
        top1, probes, ci = _per_person(acc["person_top1"], len(records))
        cloaked, trials, cloaked_ci = _per_person(acc["person_cloaked"], len(records))
        linked, pairs, linked_ci = _per_person(acc["person_linked"], len(records))
        same_ci, other_ci = (_per_person(acc[key], len(records))[2] for key in ("person_cloaked_same", "person_cloaked_other"))
        if len(set(acc["models"])) > 1:
            raise ValueError(f"row {method}/{surrogate}: masks learned from different models {sorted(set(acc['models']))}")
        models = acc["models"][0] if acc["models"] else members_of(surrogate, cfg.surrogates)
        rows.append({
            "method": method, "surrogate": surrogate, "models": list(models), "target": target,
            "box": box(surrogate, target, cfg.surrogates, models),
            "scale": scale, **_budget(method, scale, cfg),
            "jpeg": jpeg, "resize": cfg.resize, "probes": len(ranks),
            "top1_psr": round(psr_at_k(ranks, 1), 4), "top1_psr_ci": [ci.low, ci.high], "top5_psr": round(psr_at_k(ranks, 5), 4),
            **_share("cloaked_gallery_top1_psr", cloaked_ci), **_share("linked", linked_ci),
            **_share("cloaked_gallery_other_member_top1_psr", other_ci),
            **_share("cloaked_gallery_same_member_top1_psr", same_ci),
            "verification_psr": round(verification_psr(acc["genuine"], thresholds[target]), 4),
            "no_face": round(float(np.mean(np.asarray(ranks) == NOT_FOUND)), 4) if ranks else None,
            "ssim": _mean(acc["ssim"]), "psnr": _mean(acc["psnr"]), **{key: _mean(acc[key]) for key in FACE_FIELDS},
            "person_top1": top1, "person_probes": probes, "person_cloaked_gallery": cloaked, "person_trials": trials,
            "person_linked": linked, "person_pairs": pairs,
        })
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["jpeg"] != cfg.jpeg[0], r["jpeg"], r["scale"] != 1.0, r["scale"], r["target"],
                             order.get(r["method"], 99), r["surrogate"]))
    return rows

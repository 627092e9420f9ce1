"""Per-person evaluation: learn every mask from photo 1, cloak photos 2.., attack them, record outcomes.

One record per person holds raw per-probe outcomes (ranks, genuine scores, best other identity, scores
between the person's cloaked probes, quality), so figures are aggregated afterwards and partial or
resumed runs give the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from ..anchors import AnchorGallery, select_anchors
from ..apply import apply_mask_with_landmarks, measure_quality
from ..apply.quality import Box
from ..assemble import EnrollerSpec, build_enroller
from ..enroll import EnrollConfig
from ..errors import FaceCloakError
from ..faces import AlignedFace, AlignedFrame, FaceDetector, align_largest_face, to_chw_float
from ..imageio import read_image
from ..mask import Mask, member_for_photo
from ..models import get_card, torch_embedder
from ..optimise import BudgetConfig
from ..optimise.config import with_given
from ..optimise.perceptual import PerceptualBudget
from ..optimise.torch_step import SurrogateTarget
from ..views import ViewRequest
from .attacker import Attacker, AttackerGallery, build_attacker_gallery, photo_key
from .baselines import centre_mask, face_budget, noise_mask, per_image_masks, shipped
from .metrics import NO_FACE_SCORE, NOT_FOUND, best_other_scores, identity_scores, pair_scores, true_ranks
from .protocol import (ENSEMBLE, NO_SURROGATE, Dataset, EvalConfig, Person, anchor_gallery, ensemble_label, load_dataset,
                       person_seed, upload)
from .summary import FACE_FIELDS

Log = Callable[[str], None]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


@dataclass
class Variant:
    """One way of protecting a person's probes, and the cloaked photos it produced."""

    method: str
    surrogate: str
    scale: float
    photos: list[np.ndarray] = field(default_factory=list)
    learned_from: tuple[str, ...] = ()  # surrogate models the mask was optimised against (none: clean, noise)
    members: tuple[int, ...] = ()  # with a mask set: the member that cloaked each probe (empty: one mask or none)


def align_probes(detector: FaceDetector, probes: list[np.ndarray], frame: AlignedFrame) -> list[AlignedFace | None]:
    """The defender's own detection of each probe, as `facecloak apply` would do (None: no face found)."""
    faces: list[AlignedFace | None] = []
    for photo in probes:
        try:
            faces.append(align_largest_face(detector, photo, frame))
        except FaceCloakError:
            faces.append(None)
    return faces


def cloak_probes(probes: list[np.ndarray], faces: list[AlignedFace | None], mask_for: Callable[[int], Mask]) -> list[np.ndarray]:
    """Each probe with its mask applied at full resolution; a probe with no detected face stays clean."""
    return [photo if face is None else apply_mask_with_landmarks(photo, mask_for(i), face.face.landmarks)
            for i, (photo, face) in enumerate(zip(probes, faces))]


# Attacker and its embedded gallery per (targets, gallery photos, distractors): several runs in one process
# (a run and its --balance twin, a merge after shards) embed the gallery once.
_ATTACKERS: dict[tuple, tuple[Attacker, AttackerGallery]] = {}


class Harness:
    """Holds what is shared across people: detector, attacker gallery (embedded once), anchors, enroller."""

    def __init__(self, cfg: EvalConfig, dataset: Dataset | None = None, log: Log = lambda msg: None,
                 anchors: AnchorGallery | None = None, threads: int = 1) -> None:
        """``anchors`` replaces the split of the core's cached distractor gallery (tests use a tiny one).

        ``threads`` caps torch, ONNX Runtime and OpenCV threads: on a shared CPU two spinning threads
        per pool run several times slower than one, and a fixed count keeps float results reproducible.
        """
        cfg.validate()
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        self.cfg, self.log = cfg, log
        self.dataset = dataset or load_dataset(cfg)
        self.detector = FaceDetector()
        start = time.perf_counter()
        people = [(p.name, p.photos) for p in self.dataset.gallery_people]
        key = (cfg.targets, tuple(people), self.dataset.attacker_distractors)
        if key not in _ATTACKERS:  # its own detector: nothing shared with the defender
            attacker = Attacker(cfg.targets, FaceDetector(), threads)
            _ATTACKERS[key] = attacker, build_attacker_gallery(attacker, people, self.dataset.attacker_distractors)
        self.attacker, self.gallery = _ATTACKERS[key]
        self.thresholds = self.gallery.thresholds(cfg.far)
        log(f"attacker gallery: {len(self.gallery.keys)} photos of {len(self.gallery.identities)} identities "
            f"in {time.perf_counter() - start:.0f}s; thresholds at FAR {cfg.far:g}: "
            + ", ".join(f"{m} {t:.3f}" for m, (t, _) in self.thresholds.items()))
        models = tuple(sorted(set(cfg.surrogates).union(*cfg.ensembles)))
        self.anchors = anchors or anchor_gallery(models, self.dataset.anchor_names)
        # Built like the CLI's and the server's. PyTorch eager by default: every surrogate set and shape here
        # differs, so a compiled step would be prepared per row; with cfg.backend, the first ensemble's rows run on
        # the step `facecloak enroll` would use for them.
        main = self.enroll_config(cfg.ensembles[0] if cfg.ensembles else tuple(cfg.surrogates), seed=0)
        spec = EnrollerSpec(backend=cfg.backend, surrogates=main.surrogates, views=main.views, pgd=main.pgd,
                            members=main.step_members, view_backend="augment")
        assembled = build_enroller(spec, self.detector, self.anchors)
        log(f"our method's PGD for {'+'.join(main.surrogates)}: {assembled.backend}"
            + "".join(f"; {note}" for note in assembled.notes[1:]))
        self.enroller = assembled.enroller

    def surrogate_sets(self) -> list[tuple[str, tuple[str, ...]]]:
        sets = [(s, (s,)) for s in self.cfg.surrogates]
        if self.cfg.ensemble and len(self.cfg.surrogates) > 1:
            sets.append((ENSEMBLE, tuple(self.cfg.surrogates)))
        return sets + [(ensemble_label(e), tuple(e)) for e in self.cfg.ensembles]

    def enroll_config(self, surrogates: tuple[str, ...], seed: int, scale: float = 1.0, matched: bool = False) -> EnrollConfig:
        base = EnrollConfig()
        budget = self.cfg.budget(scale, matched)
        return replace(
            base, surrogates=surrogates, seed=seed, check_views=0, budget=budget,
            perceptual=PerceptualBudget(eps=budget.eps_focus) if self.cfg.perceptual else None,
            views=self.cfg.views or base.views,
            pgd=with_given(base.pgd, iterations=self.cfg.iterations or None, balance_surrogates=self.cfg.balance,
                           diversity_rotation=self.cfg.eot_rotation, upload_jpeg=self.cfg.eot_jpeg,
                           skip_gradient=self.cfg.skip_gradient, visibility_weight=self.cfg.visibility_weight,
                           spectrum_rho=self.cfg.eot_spectrum, grad_sigma=self.cfg.gradient_blur,
                           member_separation=self.cfg.member_separation, view_separation=self.cfg.view_separation,
                           bf16_surrogates=self.cfg.bf16_surrogates, bf16_convolutions=self.cfg.bf16_convolutions),
            members=self.cfg.mask_set,
        )

    def anchor_targets(self, surrogates: tuple[str, ...], crop: np.ndarray) -> list[SurrogateTarget]:
        """The same anchors enrollment picks for this face (for the per-image PGD reference)."""
        clean = torch.from_numpy(to_chw_float(crop))
        targets = []
        for name in surrogates:
            embed = torch_embedder(name)
            with torch.no_grad():
                user = embed(clean)[0]
            chosen = select_anchors(self.anchors, name, user.numpy(), get_card(name).match_threshold)
            targets.append(SurrogateTarget(embed, torch.from_numpy(chosen.near), torch.from_numpy(chosen.far), user))
        return targets

    def run_person(self, person: Person) -> tuple[dict, list[Variant]]:
        """Protect and attack one person's probes; returns the JSON record and the variants (for examples)."""
        cfg, seed = self.cfg, person_seed(self.cfg.seed, person.name)
        timings: dict[str, float] = {}
        enrollment = read_image(person.photos[0])
        probes = [read_image(p) for p in person.photos[1 : cfg.probes + 1]]
        frame = EnrollConfig().frame
        aligned = align_largest_face(self.detector, enrollment, frame)
        probe_faces = align_probes(self.detector, probes, frame)

        def cloak(mask_for: Callable[[int], Mask]) -> list[np.ndarray]:
            return cloak_probes(probes, probe_faces, mask_for)

        def timed(key: str, fn: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
            start = time.perf_counter()
            out = fn()
            timings[key] = round(time.perf_counter() - start, 2)
            return out

        # Per call of ours(): the models its mask says it was learned from, and each probe's set member.
        learned: list[tuple[tuple[str, ...], tuple[int, ...]]] = []

        def ours(surrogates: tuple[str, ...], scale: float = 1.0, matched: bool = False) -> list[np.ndarray]:
            result = self.enroller.enroll(enrollment, self.enroll_config(surrogates, seed, scale, matched))
            masks = tuple(shipped(m) for m in result.masks)
            members = tuple(member_for_photo(p, len(masks)) for p in probes)
            learned.append((tuple(masks[0].models), members if len(masks) > 1 else ()))
            return cloak(lambda i: masks[members[i]])

        variants: list[Variant] = []
        methods = set(cfg.methods)
        if "clean" in methods:
            variants.append(Variant("clean", NO_SURROGATE, 1.0, list(probes)))
        if "noise" in methods:
            for scale in (1.0, *cfg.budget_scales):
                mask = noise_mask(face_budget(aligned, cfg.budget(scale)), frame, seed)
                variants.append(Variant("noise", NO_SURROGATE, scale, cloak(lambda i: mask)))
        base = self.enroll_config(cfg.surrogates[:1] or cfg.ensembles[0], seed)  # baselines' settings (singles only)
        for label, names in self.surrogate_sets():
            single = label in cfg.surrogates  # ensemble rows are our full method only (cost)
            if "ours" in methods:
                photos = timed(f"ours/{label}", lambda: ours(names))
                variants.append(Variant("ours", label, 1.0, photos, *learned.pop()))
            if "ours_bm" in methods and single:
                photos = timed(f"ours_bm/{label}", lambda: ours(names, matched=True))
                variants.append(Variant("ours_bm", label, 1.0, photos, *learned.pop()))
            for method, budget in (("centre_uniform", cfg.uniform_budget()), ("centre", cfg.budget())):
                if method in methods and single:
                    def centre(budget: BudgetConfig = budget) -> list[np.ndarray]:
                        request = ViewRequest(enrollment, aligned.face, frame, base.views, seed)
                        views = torch.from_numpy(self.enroller.view_generator.generate(request))
                        mask = centre_mask(names, views, face_budget(aligned, budget), frame, base.pgd, budget.eps, seed)
                        return cloak(lambda i: mask)
                    variants.append(Variant(method, label, 1.0, timed(f"{method}/{label}", centre), names))
            if "pgd" in methods and single:
                def per_image() -> list[np.ndarray]:
                    found = [f for f in probe_faces if f is not None]
                    if not found:
                        return list(probes)
                    crops = to_chw_float(np.stack([f.crop for f in found]))
                    budgets = np.stack([face_budget(f, cfg.budget()) for f in found])
                    targets = self.anchor_targets(names, aligned.crop)
                    masks = iter(per_image_masks(crops, budgets, targets, frame, base.pgd, base.budget.eps, seed))
                    per_probe = [None if f is None else next(masks) for f in probe_faces]
                    return cloak(lambda i: per_probe[i])
                variants.append(Variant("pgd", label, 1.0, timed(f"pgd/{label}", per_image), names))
        if "ours" in methods and cfg.surrogates:
            for scale in cfg.budget_scales:  # PSR vs budget: our method, first surrogate
                label = cfg.surrogates[0]
                photos = timed(f"ours/{label}@{scale:g}", lambda: ours((label,), scale))
                variants.append(Variant("ours", label, scale, photos, *learned.pop()))

        start = time.perf_counter()
        record = {
            "person": person.name, "seed": seed, "apply_failed": [f is None for f in probe_faces],
            "variants": [self._score(person, v, probes, [None if f is None else f.face.box for f in probe_faces])
                         for v in variants],
        }
        timings["attack"] = round(time.perf_counter() - start, 2)
        record["seconds"] = timings
        return record, variants

    def _score(self, person: Person, variant: Variant, clean: list[np.ndarray], boxes: list[Box | None]) -> dict:
        """Quality of each cloaked probe (face figures on the defender's face box), then the attacker's view of it."""
        cfg = self.cfg
        quality = [measure_quality(c, p, b) for c, p, b in zip(clean, variant.photos, boxes)]
        entry = {
            "method": variant.method, "surrogate": variant.surrogate, "scale": variant.scale,
            "learned_from": list(variant.learned_from),
            **({"members": list(variant.members)} if variant.members else {}),
            "ssim": [round(q.ssim, 5) for q in quality],
            "psnr": [None if not np.isfinite(q.psnr) else round(q.psnr, 3) for q in quality],
            **{key: [_rounded(getattr(q, key)) for q in quality] for key in FACE_FIELDS},  # None: no face found
            "attack": {},
        }
        keys = [photo_key(p) for p in person.photos[1 : cfg.probes + 1]]
        uploads = [upload(p, cfg.resize, q) for q in cfg.jpeg for p in variant.photos]
        found, emb = self.attacker.embed(uploads)
        n = len(variant.photos)
        for j, q in enumerate(cfg.jpeg):
            rows = slice(j * n, (j + 1) * n)
            entry["attack"][str(q)] = {m: self._outcomes(emb[m][rows], found[rows], m, person.name, keys) for m in cfg.targets}
        return entry

    def _outcomes(self, emb: np.ndarray, found: np.ndarray, model: str, identity: str, keys: list[str]) -> dict:
        """Per probe: rank of the true identity (leave-one-out), genuine-pair scores and the best other
        identity's score; and the scores of every pair of the person's probes (null: a face missing).

        ``other`` and ``pairs`` let the summary run the cloaked-gallery attack and linkability
        (``metrics.cloaked_gallery_counts``, ``metrics.linked_counts``) without the gallery.
        """
        g = self.gallery
        truth = g.index(identity)
        gallery_keys = np.array(g.keys)
        sims = emb @ g.embeddings[model].T
        keep = gallery_keys[None, :] != np.array(keys)[:, None]  # the probe's own clean photo is left out
        scores = identity_scores(sims, g.labels, len(g.identities), keep)
        ranks = true_ranks(scores, [truth] * len(keys))
        genuine = []
        for i, ok in enumerate(found):
            pairs = keep[i] & (g.labels == truth)
            genuine.append([round(float(s), 4) for s in sims[i, pairs]] if ok else [NO_FACE_SCORE] * int(pairs.sum()))
        return {
            "rank": [int(r) if ok else NOT_FOUND for r, ok in zip(ranks, found)], "genuine": genuine,
            "other": [_rounded(float(s)) if ok else None for s, ok in zip(best_other_scores(scores, truth), found)],
            "pairs": [None if np.isnan(s) else _rounded(float(s)) for s in pair_scores(emb, found)],
        }

"""The enrollment pipeline: photo -> views -> anchors -> PGD -> mask, with timings and a self-check."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from .anchors import AnchorGallery, default_gallery, select_anchors
from .anchors.select import Anchors as SelectedAnchors
from .apply import Quality, apply_mask_with_landmarks, measure_quality
from .errors import BadOptionError
from .faces import AlignedFrame, Face, FaceDetector, align_largest_face, to_chw_float
from .mask import Mask, decode_mask, encode_mask, member_for_photo
from .mask.maskset import MAX_MEMBERS
from .models import get_card
from .optimise import Anchors, Budget, BudgetConfig, PGDConfig, run_pgd
from .optimise.backend import OptimiseBackend
from .presets import DEFAULT_SURROGATES, Strength
from .optimise.budget import border_taper
from .optimise.perceptual import PerceptualBudget, allowed_amplitude, clip_to_allowed, face_support
from .optimise.precision import convolution_precision
from .views import AugmentViews, ViewGenerator, ViewRequest

Progress = Callable[[str, float], None]
MAX_SEED = 2**32 - 1  # seeds travel as uint32 to the server: local and remote enrollment accept the same ones


@dataclass(frozen=True)
class EnrollConfig:
    surrogates: tuple[str, ...] = DEFAULT_SURROGATES
    views: int = 8
    check_views: int = 4  # held-out views for the self-check, never used in optimisation
    seed: int = 0
    frame: AlignedFrame = AlignedFrame()
    budget: BudgetConfig = BudgetConfig()
    pgd: PGDConfig = PGDConfig()
    # Set: the perceptual budget (optimise.perceptual) replaces the enrollment photo's fixed budget map;
    # each view is optimised under its own bound and the mask carries the rule to every applier.
    perceptual: PerceptualBudget | None = None
    # Masks in the set (issue 14): K members stepped together on every view, each towards its own G+,
    # kept apart by PGDConfig.member_separation, so cloaked photos land in K different places. A step
    # costs K single-mask steps over the same views.
    members: int = 1

    @property
    def step_members(self) -> int:
        """K of the optimise step's stacked deltas (``run_pgd``'s ``members``, ``EnrollerSpec.members``); 0 for one mask."""
        return self.members if self.members > 1 else 0

    def validate(self) -> None:
        if not 1 <= self.views <= 64:
            raise BadOptionError(f"views must be in 1..64, got {self.views}")
        if not 1 <= self.members <= MAX_MEMBERS:
            raise BadOptionError(f"members must be in 1..{MAX_MEMBERS}, got {self.members}")
        if not self.surrogates:
            raise BadOptionError("at least one surrogate model is needed")
        for name in self.surrogates:
            get_card(name)
        repeated = sorted(name for name, count in Counter(self.surrogates).items() if count > 1)
        if repeated:  # known (short) names only: a request repeating one a thousand times is not echoed
            raise BadOptionError(f"each surrogate model may be named once; repeated: {', '.join(repeated)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise BadOptionError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if not 0 < self.budget.eps <= self.budget.eps_focus <= 64 / 255:
            raise BadOptionError("budgets must satisfy 0 < eps <= eps_A <= 64/255")
        if self.perceptual is not None:
            self.perceptual.validate()
        self.pgd.validate()


def with_strength(config: EnrollConfig, strength: Strength) -> EnrollConfig:
    """``config`` with a strength preset's budget and visibility penalty (presets.STRENGTHS)."""
    budget = replace(config.budget, eps=strength.eps / 255, eps_focus=strength.eps_focus / 255)
    return replace(config, budget=budget, pgd=replace(config.pgd, visibility_weight=strength.visibility_weight))


@dataclass(frozen=True)
class SelfCheck:
    """Mean cosine similarity of held-out views to the clean enrollment photo, before and after cloaking."""

    model: str
    before: float
    after: float
    threshold: float


@dataclass
class EnrollResult:
    masks: tuple[Mask, ...]  # the set; one photo gets one member (mask.member_for_photo)
    face: Face
    anchors: list[dict[str, tuple[str, str]]]  # per member: model -> (G+ name, G- name)
    self_check: list[SelfCheck]  # per model, over the held-out views, view v cloaked by member v mod K
    timings: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # one per PGD iteration (a set's members step together)
    visibility: Quality | None = None  # the set on the enrollment photo itself (self-check; None when check_views = 0)

    @property
    def mask(self) -> Mask:
        """The first member: the whole result of a set of one."""
        return self.masks[0]


def _default_backend() -> OptimiseBackend:
    from .optimise.torch_backend import TorchBackend  # noqa: PLC0415 - PyTorch only when no backend is given

    return TorchBackend()


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class Enroller:
    """Holds the loaded detector, view backend and gallery so repeated enrollments pay no load cost."""

    def __init__(
        self,
        detector: FaceDetector | None = None,
        views: ViewGenerator | None = None,
        gallery: AnchorGallery | None = None,
        backend: OptimiseBackend | None = None,
    ) -> None:
        self.detector = detector or FaceDetector()
        self.view_generator = views or AugmentViews()
        self.backend = backend or _default_backend()
        self._gallery = gallery

    def gallery(self, models: tuple[str, ...]) -> AnchorGallery:
        if self._gallery is None or not set(models) <= self._gallery.embeddings.keys():
            self._gallery = default_gallery(tuple(sorted(set(models) | set(DEFAULT_SURROGATES))))
        return self._gallery

    def enroll(self, photo: np.ndarray, config: EnrollConfig = EnrollConfig(), progress: Progress | None = None) -> EnrollResult:
        """Learn the identity mask for the largest face in ``photo`` (RGB uint8)."""
        config.validate()
        report = progress or (lambda stage, fraction: None)
        timings: dict[str, float] = {}
        frame = config.frame
        with _timed(timings, "detect"):
            aligned = align_largest_face(self.detector, photo, frame)
        report("detect", 1.0)
        with _timed(timings, "views"):
            request = ViewRequest(photo, aligned.face, frame, config.views + config.check_views, config.seed)
            all_views = self.view_generator.generate(request)
            views, held_out = all_views[: config.views], all_views[config.views :]
        report("views", 1.0)
        with _timed(timings, "anchors"):
            gallery = self.gallery(config.surrogates)
            clean = to_chw_float(aligned.crop)
            users = {name: self.backend.embed(name, clean)[0] for name in config.surrogates}
            member_anchors = choose_member_anchors(gallery, users, config.members)
            budget = enrollment_budget(aligned.crop, aligned.frame_landmarks, views, config)
        report("anchors", 1.0)
        with _timed(timings, "optimise"), convolution_precision(config.pgd.bf16_convolutions):
            deltas, losses = optimise_members(self.backend, views, budget, member_anchors, users, config, report)
        with _timed(timings, "self_check"):
            checks = self._self_check(users, held_out, deltas, config.perceptual)
            masks = tuple(Mask(delta=np.ascontiguousarray(d.transpose(1, 2, 0)), frame=frame, models=config.surrogates,
                               perceptual=config.perceptual) for d in deltas)
            visibility = visibility_on(photo, masks, aligned.face) if config.check_views else None
        report("self_check", 1.0)
        names = [{m: (a.near_name, a.far_name) for m, a in anchors.items()} for anchors in member_anchors]
        return EnrollResult(masks, aligned.face, names, checks, timings, losses, visibility)

    def _self_check(self, users: dict[str, np.ndarray], held_out: np.ndarray, deltas: list[np.ndarray],
                    perceptual: PerceptualBudget | None) -> list[SelfCheck]:
        """Mean similarity of held-out views (never optimised on) to the user, without and with the cloak
        (each view receiving what its own perceptual budget lets through).

        Held-out view v carries member v mod K, as every photo carries one member of a set: the check
        measures what cloaked photos receive, and a set's check costs what one mask's does.
        """
        if len(held_out) == 0:
            return []
        delta = np.stack(deltas)[np.arange(len(held_out)) % len(deltas)]  # (V, 3, S, S)
        if perceptual is not None:
            delta = clip_to_allowed(delta, allowed_amplitude(held_out, perceptual))
        cloaked = np.clip(held_out + delta, 0.0, 1.0).astype(np.float32)
        checks = []
        for name, user in users.items():
            before = float((self.backend.embed(name, held_out) @ user).mean())
            after = float((self.backend.embed(name, cloaked) @ user).mean())
            checks.append(SelfCheck(name, before, after, get_card(name).match_threshold))
        return checks


def optimise_members(backend: OptimiseBackend, views: np.ndarray, budget: Budget, member_anchors: list[dict[str, SelectedAnchors]],
                     users: dict[str, np.ndarray], config: EnrollConfig, report: Progress) -> tuple[list[np.ndarray], list[float]]:
    """The set's deltas and every iteration's loss: one mask, or K members stepped together on every view.

    A set is one PGD run over K stacked deltas, each towards its own anchors, with the members'
    separation in the loss (``PGDConfig.member_separation``): members optimised apart converge to one
    shared direction that links the user's cloaked photos (docs/eval.md, "Mask sets"). Each step costs
    K single-mask steps over the same views.
    """
    if not config.step_members:
        anchors = {name: Anchors(a.near, a.far, users[name]) for name, a in member_anchors[0].items()}
    else:
        anchors = {name: Anchors(np.stack([m[name].near for m in member_anchors]), np.stack([m[name].far for m in member_anchors]),
                                 users[name]) for name in users}
    step = backend.stepper(anchors, len(views), views.shape[-1], config.pgd)
    result = run_pgd(step, views, budget, config.pgd, config.seed, progress=lambda i, n, loss: report("optimise", i / n),
                     members=config.step_members)
    return (list(result.delta) if config.step_members else [result.delta]), result.losses


def choose_member_anchors(gallery: AnchorGallery, users: dict[str, np.ndarray], members: int) -> list[dict[str, SelectedAnchors]]:
    """Per member, per surrogate: G+ / G- from the gallery, each member's G+ an identity no earlier member
    pulls towards (under any surrogate), so members push the face to different places."""
    taken: set[str] = set()
    out = []
    for _ in range(members):
        chosen = {name: select_anchors(gallery, name, user, get_card(name).match_threshold, exclude=frozenset(taken))
                  for name, user in users.items()}
        taken |= {a.near_name for a in chosen.values()}
        out.append(chosen)
    return out


def enrollment_budget(crop: np.ndarray, landmarks: np.ndarray, views: np.ndarray, config: EnrollConfig) -> Budget:
    """The fixed budget map of the enrollment photo, or with a perceptual budget: its largest amplitude on the
    face support (photo-independent, stored in the delta) and each view's own bound from that view."""
    if config.perceptual is None:
        return Budget.of_face(crop, landmarks, config.budget)
    size = crop.shape[0]
    support = face_support(landmarks, size) * border_taper(size, config.budget.border_taper_px * size / 112)
    return Budget(config.perceptual.eps * support, config.budget.eps, allowed_amplitude(views, config.perceptual))


def visibility_on(photo: np.ndarray, masks: tuple[Mask, ...], face: Face) -> Quality:
    """What people would see: the member that cloaks ``photo``, as its file carries it (quantised), at ``face``."""
    shipped = decode_mask(encode_mask(masks[member_for_photo(photo, len(masks))]))
    return measure_quality(photo, apply_mask_with_landmarks(photo, shipped, face.landmarks), face.box)

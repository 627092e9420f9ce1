"""The enrollment pipeline: photo -> views -> anchors -> PGD -> mask, with timings and a self-check."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .anchors import AnchorGallery, default_gallery, select_anchors
from .errors import BadOptionError
from .faces import AlignedFrame, Face, FaceDetector, align_largest_face, to_chw_float
from .mask import Mask
from .models import get_card, torch_embedder
from .optimise import BudgetConfig, PGDConfig, SurrogateTarget, budget_map, run_pgd
from .views import AugmentViews, ViewGenerator, ViewRequest

Progress = Callable[[str, float], None]
DEFAULT_SURROGATES = ("sface", "facenet")


@dataclass(frozen=True)
class EnrollConfig:
    surrogates: tuple[str, ...] = DEFAULT_SURROGATES
    views: int = 8
    check_views: int = 4  # held-out views for the self-check, never used in optimisation
    seed: int = 0
    frame: AlignedFrame = AlignedFrame()
    budget: BudgetConfig = BudgetConfig()
    pgd: PGDConfig = PGDConfig()

    def validate(self) -> None:
        if not 1 <= self.views <= 64:
            raise BadOptionError(f"views must be in 1..64, got {self.views}")
        if not self.surrogates:
            raise BadOptionError("at least one surrogate model is needed")
        for name in self.surrogates:
            get_card(name)
        if not 0 < self.budget.eps <= self.budget.eps_focus <= 64 / 255:
            raise BadOptionError("budgets must satisfy 0 < eps <= eps_A <= 64/255")
        self.pgd.validate()


@dataclass(frozen=True)
class SelfCheck:
    """Mean cosine similarity of held-out views to the clean enrollment photo, before and after cloaking."""

    model: str
    before: float
    after: float
    threshold: float


@dataclass
class EnrollResult:
    mask: Mask
    face: Face
    anchors: dict[str, tuple[str, str]]  # model -> (G+ name, G- name)
    self_check: list[SelfCheck]
    timings: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


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
    ) -> None:
        self.detector = detector or FaceDetector()
        self.view_generator = views or AugmentViews()
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
            all_views = torch.from_numpy(self.view_generator.generate(request))
            views, held_out = all_views[: config.views], all_views[config.views :]
        report("views", 1.0)
        with _timed(timings, "anchors"):
            gallery = self.gallery(config.surrogates)
            clean = torch.from_numpy(to_chw_float(aligned.crop))
            targets, anchors = [], {}
            for name in config.surrogates:
                embed = torch_embedder(name)
                with torch.no_grad():
                    user = embed(clean)[0]
                chosen = select_anchors(gallery, name, user.numpy(), get_card(name).match_threshold)
                anchors[name] = (chosen.near_name, chosen.far_name)
                targets.append(SurrogateTarget(embed, torch.from_numpy(chosen.near), torch.from_numpy(chosen.far), user))
            frame_landmarks = np.hstack([aligned.face.landmarks, np.ones((5, 1))]) @ aligned.matrix.T
            budget = torch.from_numpy(budget_map(aligned.crop, frame_landmarks, config.budget))
        report("anchors", 1.0)
        with _timed(timings, "optimise"):
            result = run_pgd(views, budget, targets, config.pgd, seed=config.seed,
                             progress=lambda i, n, loss: report("optimise", i / n), eps=config.budget.eps)
        with _timed(timings, "self_check"):
            checks = self._self_check(targets, config.surrogates, held_out, result.delta)
        report("self_check", 1.0)
        delta = result.delta.permute(1, 2, 0).numpy().astype(np.float32)
        mask = Mask(delta=delta, frame=frame, models=config.surrogates)
        return EnrollResult(mask, aligned.face, anchors, checks, timings, result.losses)

    @staticmethod
    def _self_check(targets: list[SurrogateTarget], names: tuple[str, ...], held_out: torch.Tensor, delta: torch.Tensor) -> list[SelfCheck]:
        if len(held_out) == 0:
            return []
        checks = []
        with torch.no_grad():
            cloaked = (held_out + delta).clamp(0, 1)
            for name, target in zip(names, targets):
                before = float((target.embed(held_out) @ target.user).mean())
                after = float((target.embed(cloaked) @ target.user).mean())
                checks.append(SelfCheck(name, before, after, get_card(name).match_threshold))
        return checks

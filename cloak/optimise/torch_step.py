"""One PGD iteration in PyTorch autograd: the reference ``Stepper``, and the function the export stage traces."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.onnx_torch import residual_gradient
from .config import PGDConfig
from .loop import Anchors, DiversityDraw, LoopState, StepInputs
from .csf import visible_energy_gradient
from .transforms import gaussian_blur, jpeg_approx, rotate, spectrum_simulate


@dataclass
class SurrogateTarget:
    """One surrogate's embedder with its anchors and the user's clean embedding (all unit vectors)."""

    embed: Callable[[torch.Tensor], torch.Tensor]
    near: torch.Tensor  # (D,) G+, or (K, D): member k's G+ when a mask set of K is stepped together
    far: torch.Tensor  # (D,) G-, or (K, D)
    user: torch.Tensor  # (D,)


@dataclass
class StepState:
    delta: torch.Tensor  # (3, S, S), or (K, 3, S, S): a mask set stepped together
    alpha: torch.Tensor  # (S, S)
    velocity: torch.Tensor  # like delta: momentum buffer


def _cross_dot_sum(vectors: torch.Tensor) -> torch.Tensor:
    """(M, ..., D) -> sum over ordered pairs j != k along the first axis of v_j . v_k, shape (...)."""
    # = |sum_k v_k|^2 - sum_k |v_k|^2: no Gram matrix, no diagonal (whose backward writes in place, which the
    # step-graph export refuses)
    total = vectors.sum(dim=0)
    return (total * total).sum(dim=-1) - (vectors * vectors).sum(dim=(0, -1))


def mean_pairwise_cosine(emb: torch.Tensor) -> torch.Tensor:
    """(K, N, D) embeddings, K >= 2 -> the mean over views and ordered pairs j != k of cos(e_j, e_k)."""
    members = emb.shape[0]
    return (_cross_dot_sum(F.normalize(emb, dim=-1)) / (members * (members - 1))).mean()


def cross_view_cosine(emb: torch.Tensor) -> torch.Tensor:
    """(N, D) or (K, N, D) embeddings, N >= 2 -> the mean cos(e[j, a], e[k, b]) over views a != b and all members j, k."""
    unit = F.normalize(emb if emb.dim() == 3 else emb[None], dim=-1)
    members, views = unit.shape[:2]
    return _cross_dot_sum(unit.sum(dim=0)) / (members * members * views * (views - 1))  # members summed per view


def cloak_loss(emb: torch.Tensor, target: SurrogateTarget, self_weight: float, separation: float = 0.0,
               view_separation: float = 0.0) -> torch.Tensor:
    """Eq. 4 averaged over views: ||e - G-|| - ||e - G+||, plus ``self_weight`` * cos(e, user).

    For a mask set, ``emb`` is (K, N, D) (member k's cloaked views) and the anchors (K, D); the loss then
    adds ``separation`` times the members' mean pairwise cosine on the same view, so the members push
    each photo to mutually distant places instead of one shared direction (issue 14). For one mask or a
    set, ``view_separation`` times the mean cosine between cloaked embeddings of different views keeps
    the cloak from sending every photo of the user to one place.
    """
    near, far = (target.near[:, None], target.far[:, None]) if emb.dim() == 3 else (target.near, target.far)
    loss = (emb - far).norm(dim=-1) - (emb - near).norm(dim=-1)
    if self_weight:
        loss = loss + self_weight * (emb @ target.user)
    loss = loss.mean()
    if emb.dim() == 3 and emb.shape[0] > 1 and separation:
        loss = loss + separation * mean_pairwise_cosine(emb)
    if view_separation and emb.shape[-2] > 1:
        loss = loss + view_separation * cross_view_cosine(emb)
    return loss


def diversify(x: torch.Tensor, theta: torch.Tensor, down_size: int, angle: torch.Tensor | None = None,
              upload_jpeg: int = 0, spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate (N, 3, S, S) views by ``angle`` (if given), warp by ``theta``, JPEG round-trip at
    ``upload_jpeg`` (if not 0), simulate a spectrum (if given), then down/up-sample through ``down_size``.
    Differentiable.

    The down/up-sampling comes last because the exported step graph applies it as a matrix in front of
    each embedder (``export.step_graph``); the order is one model of the upload either way.
    """
    size = x.shape[-1]
    if angle is not None:
        x = rotate(x, angle)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if upload_jpeg:
        x = jpeg_approx(x, upload_jpeg)
    if spectrum is not None:
        x = spectrum_simulate(x, spectrum)
    if down_size < size:
        x = F.interpolate(x, size=down_size, mode="bilinear", antialias=True, align_corners=False)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def _unit_mean(g: torch.Tensor) -> torch.Tensor:
    """``g`` over its mean magnitude; a set's (K, 3, S, S) gradient per member, so no member steps for another."""
    dims = tuple(range(max(g.dim() - 3, 0), g.dim()))
    return g / g.abs().mean(dim=dims, keepdim=True).clamp_min(1e-12)


def _standardise(g: torch.Tensor) -> torch.Tensor:
    return (g - g.mean()) / g.std().clamp_min(1e-12)


def clip_to_budget(x: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Clip ``x`` to [-bound, bound] per pixel (bound is a tensor, so torch.clamp's scalars do not fit)."""
    return torch.maximum(torch.minimum(x, bound), -bound)


def colour_project(x: torch.Tensor, bound: torch.Tensor, chroma_ratio: float) -> torch.Tensor:
    """Project a (3, S, S) RGB delta onto the luminance-first budget (``PGDConfig.chroma_ratio``).

    ``x`` splits into luma ``y`` (the channel mean: an achromatic grey shift) and chroma ``c = x - y``
    (zero-sum over R, G, B: the opponent axes R-G and (R+G)/2-B span it). ``y`` is clipped to the
    pixel budget ``b``; ``c`` is scaled (not clipped, so it stays pure chroma) until its largest
    channel is at most ``min(chroma_ratio * b, b - |y|)``, hence ``|y + c| <= b`` on every channel.
    ``chroma_ratio >= 1`` is today's independent per-channel clip. Pure tensor ops (traceable).
    """
    if chroma_ratio >= 1:
        return clip_to_budget(x, bound)
    b = bound.amin(dim=-3, keepdim=True)
    luma = clip_to_budget(x.mean(dim=-3, keepdim=True), b)
    chroma = x - x.mean(dim=-3, keepdim=True)
    room = torch.minimum(b * chroma_ratio, b - luma.abs())
    peak = chroma.abs().amax(dim=-3, keepdim=True)
    chroma = chroma * torch.minimum(room / peak.clamp_min(1e-12), torch.ones_like(peak))
    return clip_to_budget(luma + chroma, bound)  # a no-op up to rounding


def surrogate_embedding(embed: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, bf16: bool) -> torch.Tensor:
    """``embed(batch)`` as float32, computed in bfloat16 under autocast if ``bf16`` (PGDConfig.bf16_surrogates)."""
    if not bf16:
        return embed(batch)
    with torch.autocast(batch.device.type, dtype=torch.bfloat16):
        return embed(batch).float()


def pgd_step(
    state: StepState, views: torch.Tensor, bound: torch.Tensor, steps: torch.Tensor, view_bound: torch.Tensor,
    targets: Sequence[SurrogateTarget], cfg: PGDConfig, theta: torch.Tensor, down_size: int,
    angle: torch.Tensor | None = None, spectrum: torch.Tensor | None = None,
) -> tuple[StepState, torch.Tensor]:
    """One PGD iteration over all views at once: loss, input gradient, attention update, projection.

    ``steps`` is the per-pixel step size; ``view_bound`` (N, 1, S, S) what each view lets through of
    the delta (its perceptual budget); ``theta``, ``down_size``, ``angle`` (N,) and ``spectrum``
    (N, 2, 3, S, S) the step's diversity draw (``angle`` is read only if ``cfg.diversity_rotation``,
    ``spectrum`` only if ``cfg.spectrum_rho``). A (K, 3, S, S) delta is a mask set: every member on
    every view under the same draw, member k towards row k of the anchors, with the members kept apart
    (``cfg.member_separation``). Pure: returns the new state and the loss.
    """
    if cfg.diversity_rotation and angle is None:
        raise ValueError("PGDConfig.diversity_rotation needs the draw's angles")
    if cfg.spectrum_rho and spectrum is None:
        raise ValueError("PGDConfig.spectrum_rho needs the draw's spectrum")
    delta = state.delta.detach().requires_grad_(True)
    alpha = state.alpha.detach().requires_grad_(cfg.attention)
    members = delta.shape[0] if delta.dim() == 4 else 0
    effective = clip_to_budget(delta * alpha, bound)
    if members:  # (K, N) cloaked views as one batch of K * N; every member sees the same draw
        cloaked = (views + clip_to_budget(effective[:, None], view_bound)).clamp(0, 1).flatten(0, 1)
        theta, angle = theta.repeat(members, 1, 1), (None if angle is None else angle.repeat(members))
        spectrum = None if spectrum is None else spectrum.repeat(members, 1, 1, 1, 1)
    else:
        cloaked = (views + clip_to_budget(effective, view_bound)).clamp(0, 1)
    batch = diversify(cloaked, theta, down_size, angle if cfg.diversity_rotation else None, cfg.upload_jpeg,
                      spectrum if cfg.spectrum_rho else None)
    with residual_gradient(cfg.skip_gradient):  # only the backward differs (SGM)
        embedded = [surrogate_embedding(t.embed, batch, cfg.bf16_surrogates) for t in targets]
        losses = [cloak_loss(e.unflatten(0, (members, -1)) if members else e, t, cfg.self_weight, cfg.member_separation,
                             cfg.view_separation)
                  for e, t in zip(embedded, targets)]
    loss = sum(losses) / len(targets)
    wrt = [delta, alpha] if cfg.attention else [delta]
    if cfg.balance_surrogates and len(targets) > 1:
        per_model = [torch.autograd.grad(part, wrt, retain_graph=True) for part in losses]
        grads = [sum(_unit_mean(g[i]) for g in per_model) / len(targets) for i in range(len(wrt))]
    else:
        grads = torch.autograd.grad(loss, wrt)
    with torch.no_grad():
        grad = _unit_mean(gaussian_blur(grads[0], cfg.grad_sigma))
        if cfg.visibility_weight:  # descend the cloak loss and what a viewer sees of the delta together
            seen = [visible_energy_gradient(d) for d in (delta * alpha).reshape(-1, *delta.shape[-3:])]
            grad = _unit_mean(grad + cfg.visibility_weight * _unit_mean(alpha * torch.stack(seen).reshape(delta.shape)))
        velocity = cfg.momentum * state.velocity + grad
        new_delta = colour_project(delta - steps * velocity.sign(), bound, cfg.chroma_ratio)
        new_alpha = (alpha - cfg.attention_lr * _standardise(grads[1])).clamp(0, 1) if cfg.attention else alpha
    return StepState(new_delta, new_alpha.detach(), velocity), loss.detach()


def surrogate_targets(embedders: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
                      anchors: Mapping[str, Anchors]) -> list[SurrogateTarget]:
    """Torch targets from numpy anchors, in ``anchors``' order."""
    return [SurrogateTarget(embedders[m], *(torch.from_numpy(np.asarray(v, np.float32)) for v in (a.near, a.far, a.user)))
            for m, a in anchors.items()]


class TorchStepper:
    """``pgd_step`` behind the loop's ``Stepper`` interface (numpy in, numpy out; no copies)."""

    def __init__(self, targets: Sequence[SurrogateTarget], cfg: PGDConfig) -> None:
        if not targets:
            raise ValueError("at least one surrogate is needed")
        self.targets, self.cfg = list(targets), cfg

    def __call__(self, fixed: StepInputs, state: LoopState, draw: DiversityDraw) -> tuple[LoopState, float]:
        t = torch.from_numpy
        new, loss = pgd_step(StepState(t(state.delta), t(state.alpha), t(state.velocity)), t(fixed.views),
                             t(fixed.bound), t(fixed.steps), t(fixed.view_bound), self.targets, self.cfg, t(draw.theta), draw.down_size,
                             t(draw.angle), t(draw.spectrum))
        return LoopState(new.delta.numpy(), new.alpha.numpy(), new.velocity.numpy()), float(loss)

"""Choosing G+ (nearest other identity) and G- (farthest) for one user and one surrogate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadOptionError
from .gallery import AnchorGallery


@dataclass(frozen=True)
class Anchors:
    near: np.ndarray  # G+: embedding of the nearest other identity
    far: np.ndarray  # G-: embedding of the farthest identity
    near_name: str
    far_name: str


def select_anchors(
    gallery: AnchorGallery, model: str, user: np.ndarray, self_threshold: float, exclude: frozenset[str] = frozenset()
) -> Anchors:
    """Nearest/farthest gallery identities to ``user`` under ``model``.

    Any entry whose cosine similarity to the user reaches ``self_threshold`` (the model's match
    threshold) is treated as the user and never chosen, as are names in ``exclude``.
    """
    if model not in gallery.embeddings:
        raise BadOptionError(f"the anchor gallery has no embeddings for model {model!r}")
    emb = gallery.embeddings[model]
    user = user / np.linalg.norm(user)
    sims = emb @ user
    allowed = (sims < self_threshold) & np.array([n not in exclude for n in gallery.names])
    if allowed.sum() < 2:
        raise BadOptionError("the anchor gallery has fewer than two identities other than the user")
    idx = np.flatnonzero(allowed)
    near, far = idx[np.argmax(sims[idx])], idx[np.argmin(sims[idx])]
    return Anchors(emb[near], emb[far], gallery.names[near], gallery.names[far])

"""The attacker: re-detects every photo itself, aligns it for each model, embeds with ONNX Runtime.

Nothing from the defender's side (landmarks, aligned crops, torch models) is reused here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FaceCloakError
from ..faces import AlignedFrame, FaceDetector, detect_largest_face, estimate_similarity, to_chw_float, warp_to_frame
from ..imageio import read_image
from ..models import OrtEmbedder, get_card
from .metrics import impostor_scores, threshold_at_far

BATCH = 32


class Attacker:
    """Embeds photos under each target model, aligning each face at the model's native input size."""

    def __init__(self, models: Sequence[str], detector: FaceDetector | None = None, threads: int = 1) -> None:
        self.models = tuple(models)
        self.detector = detector or FaceDetector()
        # Own sessions with few threads: spinning ORT pools collapse on a shared, oversubscribed CPU.
        self.embedders = {m: OrtEmbedder(get_card(m), threads=threads) for m in self.models}
        self.frames = {m: AlignedFrame(size=get_card(m).input_size, scale=get_card(m).template_scale) for m in self.models}

    def embed(self, photos: Sequence[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(found (N,) bool, model -> (N, D) unit embeddings; rows without a face are zeros)."""
        found = np.zeros(len(photos), dtype=bool)
        crops: dict[str, list[np.ndarray]] = {m: [] for m in self.models}
        for i, photo in enumerate(photos):
            try:
                landmarks = detect_largest_face(self.detector, photo).landmarks
            except FaceCloakError:
                continue
            found[i] = True
            for m in self.models:  # one detection, one warp per model frame
                frame = self.frames[m]
                crops[m].append(warp_to_frame(photo, estimate_similarity(landmarks, frame.points()), frame))
        out = {}
        for m in self.models:
            emb = np.zeros((len(photos), get_card(m).embedding_dim), dtype=np.float32)
            if crops[m]:
                faces = to_chw_float(np.stack(crops[m]))
                emb[found] = np.concatenate([self.embedders[m](faces[i : i + BATCH]) for i in range(0, len(faces), BATCH)])
            out[m] = emb
        return found, out


@dataclass(frozen=True)
class AttackerGallery:
    """The attacker's clean gallery: one entry per photo, several entries per identity.

    ``keys`` name each entry's source photo, so a probe can leave its own clean copy out.
    """

    identities: tuple[str, ...]
    labels: np.ndarray  # (G,) index into identities
    keys: tuple[str, ...]
    embeddings: dict[str, np.ndarray]  # model -> (G, D)

    def index(self, identity: str) -> int:
        return self.identities.index(identity)

    def thresholds(self, far: float) -> dict[str, tuple[float, int]]:
        """Per model: (cosine threshold at ``far`` on clean impostor pairs, number of pairs)."""
        out = {}
        for model, emb in self.embeddings.items():
            scores = impostor_scores(emb, self.labels)
            out[model] = (threshold_at_far(scores, far), int(scores.size))
        return out


def photo_key(path: Path) -> str:
    return path.stem


def build_attacker_gallery(attacker: Attacker, people: Sequence[tuple[str, Sequence[Path]]], distractors: Sequence[Path]) -> AttackerGallery:
    """Embed every clean gallery photo once per run. Photos with no detected face are left out."""
    entries = [(name, p) for name, photos in people for p in photos] + [(p.stem, p) for p in distractors]
    identities = tuple(dict.fromkeys(name for name, _ in entries))
    index = {name: i for i, name in enumerate(identities)}
    found_all, emb_all = [], {m: [] for m in attacker.models}
    for start in range(0, len(entries), BATCH):
        chunk = entries[start : start + BATCH]
        found, emb = attacker.embed([read_image(p) for _, p in chunk])
        found_all.append(found)
        for m in attacker.models:
            emb_all[m].append(emb[m])
    found = np.concatenate(found_all)
    kept = [e for e, f in zip(entries, found) if f]
    return AttackerGallery(
        identities=identities,
        labels=np.array([index[name] for name, _ in kept], dtype=np.int64),
        keys=tuple(photo_key(p) for _, p in kept),
        embeddings={m: np.concatenate(v)[found] for m, v in emb_all.items()},
    )

"""Anchor galleries: one L2-normalised embedding per identity, per surrogate model."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..assets import assets_dir, cache_dir
from ..atomic import atomic_output
from ..errors import BadOptionError, FaceCloakError
from ..faces import AlignedFrame, FaceDetector, align_largest_face, to_chw_float
from ..imageio import read_image
from ..models import inference_embedder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
DEFAULT_GALLERY_DIR = "faces/lfw-distractors"


@dataclass(frozen=True)
class AnchorGallery:
    names: tuple[str, ...]
    embeddings: dict[str, np.ndarray]  # model name -> (N, D) float32, unit rows

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader never sees half a file); ``.npz`` is appended if missing, as numpy does."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        with atomic_output(path) as file:
            np.savez_compressed(file, names=np.array(self.names), **{f"emb_{k}": v for k, v in self.embeddings.items()})
        return path

    @staticmethod
    def load(path: str | Path) -> "AnchorGallery":
        try:
            with np.load(path, allow_pickle=False) as data:
                names = tuple(str(n) for n in data["names"])
                embeddings = {k[4:]: data[k].astype(np.float32) for k in data.files if k.startswith("emb_")}
        except (OSError, KeyError, ValueError) as exc:
            raise BadOptionError(f"{path} is not an anchor gallery: {exc}") from None
        return AnchorGallery(names, embeddings)


def identity_of(path: Path, root: Path) -> str:
    """Identity label: the sub-folder under ``root`` if any, else the file stem without a _NNNN suffix."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else re.sub(r"_\d+$", "", path.stem)


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def build_gallery(
    images: Iterable[Path],
    root: Path,
    models: tuple[str, ...],
    frame: AlignedFrame = AlignedFrame(),
    detector: FaceDetector | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 32,
) -> AnchorGallery:
    """Embed every image (largest face), average per identity, normalise. Unreadable/faceless images are skipped."""
    detector = detector or FaceDetector()
    images = list(images)
    labels, crops = [], []
    for i, path in enumerate(images):
        try:
            crops.append(align_largest_face(detector, read_image(path), frame).crop)
            labels.append(identity_of(path, root))
        except FaceCloakError:
            pass
        if progress:
            progress(i + 1, len(images))
    if not crops:
        raise BadOptionError(f"no usable face images under {root}")
    faces = to_chw_float(np.stack(crops))
    order = sorted(set(labels))
    index = {name: i for i, name in enumerate(order)}
    embeddings = {}
    for model in models:
        embed = inference_embedder(model)
        emb = np.concatenate([embed(faces[i : i + batch]) for i in range(0, len(faces), batch)])
        sums: dict[int, np.ndarray] = defaultdict(lambda: 0)
        for label, row in zip(labels, emb):
            sums[index[label]] = sums[index[label]] + row
        mean = np.stack([sums[i] for i in range(len(order))]).astype(np.float32)
        embeddings[model] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return AnchorGallery(tuple(order), embeddings)


def default_gallery(models: tuple[str, ...], progress: Callable[[int, int], None] | None = None) -> AnchorGallery:
    """The anchor gallery built from the shared distractor photos, cached after the first build."""
    root = assets_dir() / DEFAULT_GALLERY_DIR
    images = list_images(root)
    key = hashlib.sha256(("|".join(p.name for p in images) + "|" + ",".join(sorted(models))).encode()).hexdigest()[:16]
    path = cache_dir() / f"anchors-{key}.npz"
    if path.exists():
        return AnchorGallery.load(path)
    gallery = build_gallery(images, root, tuple(sorted(models)), progress=progress)
    gallery.save(path)  # concurrent builders (server workers, eval shards) each write their own temp file
    return gallery

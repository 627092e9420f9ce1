"""Face-recognition models as data: one entry = an ONNX file + the card that says how to feed it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BadOptionError


@dataclass(frozen=True)
class ModelCard:
    """How to feed a recogniser and compare its embeddings.

    The input is the face aligned to the 5-point ``template`` (zoomed out by ``template_scale``) at
    ``input_size`` px, in ``channel_order``, scaled linearly to ``value_range``.
    """

    name: str
    file: str  # relative to the assets folder
    input_size: int
    input_name: str
    output_name: str
    embedding_dim: int
    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    template: str = "arcface5"
    template_scale: float = 1.0
    distance: str = "cosine"
    # Cosine similarity at or above which two faces count as the same person (1:1 verification).
    match_threshold: float = 0.5
    notes: str = ""


REGISTRY: dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    """Add a model card to the registry (names are unique)."""
    if card.name in REGISTRY:
        raise ValueError(f"model {card.name!r} is already registered")
    REGISTRY[card.name] = card
    return card


def get_card(name: str) -> ModelCard:
    """Card by name, with a clear error listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise BadOptionError(f"unknown face-recognition model {name!r}; known: {sorted(REGISTRY)}") from None


register(
    ModelCard(
        name="sface",
        file="models/sface_112.onnx",
        input_size=112,
        input_name="data",
        output_name="fc1",
        embedding_dim=128,
        # OpenCV model zoo's published cosine threshold for SFace.
        match_threshold=0.363,
        notes="SFace (OpenCV zoo 2021dec), MobileFaceNet-style, normalisation inside the graph.",
    )
)
register(
    ModelCard(
        name="facenet",
        file="models/facenet_casia_160.onnx",
        input_size=160,
        input_name="input",
        output_name="embedding",
        embedding_dim=512,
        # Threshold at FAR = 1e-3 on 1.1 M clean LFW impostor pairs, measured by `facecloak eval`
        # (docs/eval/report.md); for SFace the same measurement gives 0.367, next to OpenCV's 0.363.
        match_threshold=0.593,
        notes="FaceNet InceptionResnetV1 trained on CASIA-WebFace; ArcFace template scaled to 160 px.",
    )
)

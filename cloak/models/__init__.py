"""Face-recognition models: registry of model cards, torch and ONNX Runtime embedders."""

from .registry import REGISTRY, ModelCard, get_card, register
from .surrogate import OrtEmbedder, TorchEmbedder, inference_embedder, numpy_torch_embedder, ort_embedder, torch_embedder

__all__ = ["REGISTRY", "ModelCard", "OrtEmbedder", "TorchEmbedder", "get_card", "inference_embedder", "numpy_torch_embedder", "ort_embedder", "register", "torch_embedder"]

"""Which stage-1 backend runs here: ``arc2face`` when its weights, its extra and an accelerator are
present, else the CPU augmentation default, with a one-line reason the server's Describe reports.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import FaceCloakError
from .arc2face_layout import verify_layout

ENV_MODEL_DIR = "FACECLOAK_ARC2FACE_DIR"
EXTRA_MODULES = ("diffusers", "transformers")


def cuda_device_name() -> str | None:
    """Name of the first CUDA device, or None (the check that decides fp16 GPU generation)."""
    import torch  # noqa: PLC0415 - keeps this module cheap to import

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


@dataclass(frozen=True)
class BackendChoice:
    name: str  # "arc2face" or "augment"
    reason: str  # one line for logs and Describe
    model_dir: Path | None = None


def choose_view_backend(
    model_dir: str | Path | None = None,
    accelerator: Callable[[], str | None] = cuda_device_name,
    allow_cpu: bool = False,
) -> BackendChoice:
    """Decide the backend without loading any weights (checksums are verified later, at load).

    ``model_dir`` defaults to $FACECLOAK_ARC2FACE_DIR; ``allow_cpu`` permits Arc2Face without an
    accelerator (minutes per view: for experiments, never the default).
    """
    model_dir = model_dir or os.environ.get(ENV_MODEL_DIR)
    if not model_dir:
        return BackendChoice("augment", f"augment: no Arc2Face model directory configured (set {ENV_MODEL_DIR})")
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return BackendChoice("augment", f"augment: Arc2Face needs the 'arc2face' extra ({', '.join(missing)} not installed)")
    try:
        layout = verify_layout(model_dir, check_hashes=False)
    except FaceCloakError as exc:
        return BackendChoice("augment", f"augment: Arc2Face weights unusable: {exc}")
    device = accelerator()
    if device is None and not allow_cpu:
        return BackendChoice("augment", "augment: Arc2Face weights present but no CUDA accelerator")
    where = device or "cpu (allow_cpu)"
    return BackendChoice("arc2face", f"arc2face: weights at {layout.root} on {where}", layout.root)

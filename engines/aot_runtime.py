"""The ``aot-cpu`` runtime: the PGD step compiled ahead of time by AOTInductor for this CPU.

``facecloak-export aot`` (or the first enrollment with ``--backend auto``) traces the same step
function the ONNX export traces and compiles it to native code in a ``.pt2`` package; this runtime
loads the package in milliseconds, with no tracing or compiling at request time. The package is tied
to the PyTorch version and the CPU it was compiled on: other ones are refused with the reason.
Embeddings (anchors, self-check) run on PyTorch eager, the core's reference.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .manifest import EngineMismatchError
from .runtime_base import Embedder, EngineUnavailableError, GraphCall, ManifestRuntime, RuntimeConfig, StepKey


def cpu_fingerprint() -> str:
    """Architecture + the instruction-set flags native code may have been compiled for."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        pass
    return f"{platform.machine()}-{hashlib.sha256(flags.encode()).hexdigest()[:12]}"


class AotRuntime(ManifestRuntime):
    """AOTInductor packages listed in a manifest (kind ``aot-step``), run on the CPU through PyTorch."""

    name = "aot-cpu"

    def __init__(self, config: RuntimeConfig) -> None:
        try:
            import torch
        except ImportError:
            raise EngineUnavailableError("the aot-cpu runtime needs PyTorch") from None
        super().__init__(config)
        self._torch = torch
        built = self.manifest.versions.get("torch")
        if built != torch.__version__:
            raise EngineMismatchError(f"the AOT step was compiled with PyTorch {built}, this is {torch.__version__}: re-prepare")
        self._packages: dict[str, object] = {}

    def embedder(self, model: str) -> Embedder:
        from facecloak.models import numpy_torch_embedder

        return numpy_torch_embedder(model)

    def stepper(self, key: StepKey) -> GraphCall:
        artefact = self.step_artefact(key, kind="aot-step")
        if artefact.attributes.get("cpu") != cpu_fingerprint():
            raise EngineMismatchError(f"{artefact.name} was compiled for another CPU ({artefact.attributes.get('cpu')}, "
                                      f"this is {cpu_fingerprint()}): re-prepare")
        if artefact.name not in self._packages:
            self._packages[artefact.name] = self._torch._inductor.aoti_load_package(str(self._checked(artefact)))
        run, names, torch = self._packages[artefact.name], list(artefact.inputs), self._torch
        outputs = list(artefact.outputs)

        def call(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.no_grad():
                out = run(*(torch.from_numpy(np.ascontiguousarray(feeds[n], np.float32)) for n in names))
            return {k: v.numpy() for k, v in zip(outputs, out)}

        return call

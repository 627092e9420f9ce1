"""The runtimes of exported graphs, chosen by config: ONNX Runtime (here), TensorRT (``tensorrt_runtime``)
and AOTInductor packages for the CPU (``aot_runtime``).

A runtime hands out two kinds of callables, numpy in and numpy out:
- ``embedder(model)``: aligned RGB faces (B, 3, S, S) in [0, 1] -> unit embeddings (B, D);
- ``stepper(key)``: one PGD iteration, feeds named as the exported step graph's inputs.

They load only what a build folder's manifest lists, after checking it against the models this process
serves, and never import PyTorch: the serving path runs the core's PGD loop with numpy + ONNX Runtime
alone (``engines.graph_backend``). PyTorch eager is the core's own ``optimise.torch_backend``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .manifest import Artefact, EngineMismatchError
from .runtime_base import (
    RUNTIME_KINDS, Embedder, EngineUnavailableError, GraphCall, ManifestRuntime, Runtime, RuntimeConfig, StepKey,
    default_build_dir,
)

__all__ = ["RUNTIME_KINDS", "EngineUnavailableError", "OrtRuntime", "Runtime", "RuntimeConfig", "StepKey",
           "default_build_dir", "open_first_runtime", "open_runtime"]


class OrtRuntime(ManifestRuntime):
    """ONNX Runtime on CPU (``onnxruntime``) or CUDA (``onnxruntime-gpu``)."""

    def __init__(self, config: RuntimeConfig) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailableError("ONNX Runtime is not installed: pip install 'facecloak[cpu]' "
                                         "(or 'facecloak[gpu]' on a CUDA host)") from None
        providers = ["CPUExecutionProvider"]
        if config.kind == "ort-cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineUnavailableError("ONNX Runtime has no CUDA provider here: install the `gpu` extra "
                                             "(onnxruntime-gpu, not together with onnxruntime) on a CUDA host")
            providers.insert(0, "CUDAExecutionProvider")
        super().__init__(config)
        self.name = config.kind
        self._ort, self._providers = ort, providers
        self._sessions: dict[str, object] = {}

    def _session(self, artefact: Artefact):  # noqa: ANN202 - onnxruntime.InferenceSession
        if artefact.name not in self._sessions:
            opts = self._ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = self.config.threads
            opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sessions[artefact.name] = self._ort.InferenceSession(str(self._checked(artefact)), opts, providers=self._providers)
        return self._sessions[artefact.name]

    def embedder(self, model: str) -> Embedder:
        session = self._session(self.surrogate_artefact(model))
        (input_name,), output = [i.name for i in session.get_inputs()], session.get_outputs()[0].name
        return lambda faces: session.run([output], {input_name: np.ascontiguousarray(faces, np.float32)})[0]

    def stepper(self, key: StepKey) -> GraphCall:
        artefact = self.step_artefact(key)
        session = self._session(artefact)
        outputs = list(artefact.outputs)
        return lambda feeds: dict(zip(outputs, session.run(outputs, dict(feeds))))


def open_runtime(config: RuntimeConfig) -> Runtime:
    """The runtime ``config.kind`` names, or ``EngineUnavailableError``/``EngineMismatchError`` saying why not."""
    if config.kind == "aot-cpu":
        from .aot_runtime import AotRuntime

        return AotRuntime(config)
    if config.kind == "tensorrt":
        from .tensorrt_runtime import TensorRTRuntime

        return TensorRTRuntime(config)
    return OrtRuntime(config)


def open_first_runtime(kinds: Sequence[str], config: RuntimeConfig,
                       warm: Callable[[Runtime], object] | None = None) -> tuple[Runtime, list[str]]:
    """First of ``kinds`` that opens (e.g. tensorrt, ort-cuda, ort-cpu); also the reasons the others were refused.

    ``warm(runtime)`` should load what the caller will serve (``embedder``/``stepper`` calls), so a
    manifest that does not match the served models is refused here, at start-up, not mid-request.
    """
    refusals: list[str] = []
    for kind in kinds:
        try:
            runtime = open_runtime(RuntimeConfig(kind, config.engine_dir, config.threads, config.model_files, config.verify_files))
            if warm is not None:
                warm(runtime)
            return runtime, refusals
        except (EngineUnavailableError, EngineMismatchError) as exc:
            refusals.append(f"{kind}: {exc}")
    raise EngineUnavailableError("no runtime could be opened: " + " | ".join(refusals))

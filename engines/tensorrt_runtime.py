"""The TensorRT runtime: serialized engines from ``facecloak-export build``, run with cuda-python.

Refuses (``EngineMismatchError``) engines built by another TensorRT version or for another GPU
architecture, and fails clearly (``EngineUnavailableError``) where TensorRT or CUDA is missing, so a
server configured with ``tensorrt, ort-cpu`` falls back to ONNX Runtime with the reason logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

from .manifest import Artefact, EngineMismatchError
from .runtime_base import Embedder, EngineUnavailableError, GraphCall, ManifestRuntime, RuntimeConfig, StepKey

ENGINE_SUBDIR = "tensorrt"  # engines and their manifest live in <build>/tensorrt/


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a clear ``EngineUnavailableError`` naming what to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailableError(
            f"TensorRT is not installed here ({exc}). Build engines on a GPU host with CUDA: "
            "`pip install tensorrt cuda-python` there, then `facecloak-export build --out <folder>` "
            "(see docs/export.md); no engine was written") from None
    return tensorrt


def cuda_runtime() -> ModuleType:
    """cuda-python's runtime module (its import path moved between releases)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise EngineUnavailableError("cuda-python is not installed: `pip install cuda-python` on the GPU host") from None
    return cudart


def gpu_info() -> dict[str, str | None]:
    """Name, compute capability and CUDA runtime version of device 0 (via cuda-python)."""
    cudart = cuda_runtime()
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise EngineUnavailableError(f"no usable CUDA device (cudaGetDeviceProperties error {err})")
    _, version = cudart.cudaRuntimeGetVersion()
    name = props.name.decode(errors="replace").strip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name, "compute_capability": f"{props.major}.{props.minor}", "cuda": f"{version // 1000}.{version % 1000 // 10}"}




def _check(call_result: tuple) -> object:  # noqa: ANN401 - cuda-python returns (err, *values)
    err, *values = call_result
    if int(err) != 0:
        raise EngineUnavailableError(f"CUDA call failed with error {err}")
    return values[0] if len(values) == 1 else values


class TensorRTEngine:
    """One deserialized engine with an execution context; synchronous numpy in/out."""

    def __init__(self, trt, runtime, path: Path, cudart) -> None:  # noqa: ANN001
        self.cudart = cudart
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"TensorRT could not deserialize {path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = _check(cudart.cudaStreamCreate())

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, allocations, results = self.cudart, [], {}
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        try:
            for name in self.inputs:
                array = np.ascontiguousarray(feeds[name], np.float32)
                self.context.set_input_shape(name, array.shape)
                pointer = _check(cudart.cudaMalloc(max(array.nbytes, 1)))
                allocations.append(pointer)
                _check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self.stream))
                self.context.set_tensor_address(name, int(pointer))
            for name in self.outputs:
                results[name] = np.empty(tuple(self.context.get_tensor_shape(name)), np.float32)
                pointer = _check(cudart.cudaMalloc(max(results[name].nbytes, 1)))
                allocations.append(pointer)
                self.context.set_tensor_address(name, int(pointer))
            if not self.context.execute_async_v3(self.stream):
                raise EngineUnavailableError("TensorRT execution failed")
            for name, pointer in zip(self.outputs, allocations[len(self.inputs):]):
                _check(cudart.cudaMemcpyAsync(results[name].ctypes.data, pointer, results[name].nbytes, d2h, self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
        finally:
            for pointer in allocations:
                cudart.cudaFree(pointer)
        return results


class TensorRTRuntime(ManifestRuntime):
    """Engines from ``<engine_dir>/tensorrt/manifest.json``, checked against this TensorRT and GPU."""

    name = "tensorrt"

    def __init__(self, config: RuntimeConfig) -> None:
        trt = import_tensorrt()
        gpu = gpu_info()
        super().__init__(RuntimeConfig("tensorrt", Path(config.engine_dir) / ENGINE_SUBDIR, config.threads,
                                       config.model_files, config.verify_files))
        built = self.manifest.versions.get("tensorrt")
        if built != trt.__version__:
            raise EngineMismatchError(f"engines were built with TensorRT {built}, this host runs {trt.__version__}: rebuild")
        if self.manifest.gpu.get("compute_capability") != gpu["compute_capability"]:
            raise EngineMismatchError(f"engines were built for compute capability {self.manifest.gpu.get('compute_capability')} "
                                      f"({self.manifest.gpu.get('name')}), this GPU is {gpu['compute_capability']} ({gpu['name']})")
        self._trt, self._cudart = trt, cuda_runtime()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engines: dict[str, TensorRTEngine] = {}

    def _engine(self, artefact: Artefact) -> TensorRTEngine:
        if artefact.name not in self._engines:
            self._engines[artefact.name] = TensorRTEngine(self._trt, self._runtime, self._checked(artefact), self._cudart)
        return self._engines[artefact.name]

    def embedder(self, model: str) -> Embedder:
        engine = self._engine(self.surrogate_artefact(model))
        (name,), (output,) = engine.inputs, engine.outputs
        return lambda faces: engine({name: faces})[output]

    def stepper(self, key: StepKey) -> GraphCall:
        return self._engine(self.step_artefact(key))

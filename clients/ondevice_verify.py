"""Verify exported on-device ops on Linux against the server's apply, on real LFW photos.

Runners adapt each runtime to ondevice_reference.Runner; :func:`compare` cloaks one photo with a
runner and with facecloak.apply and returns the largest difference in grey levels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..apply import apply_mask_with_landmarks
from ..assets import asset
from ..faces import FaceDetector
from ..faces.detect import detect_largest_face
from ..faces.align import AlignedFrame
from ..mask import Mask, decode_mask, encode_mask
from .ondevice_reference import Runner, cloak_frame, load_device_mask

TOLERANCE_LEVELS = 1  # 1/255: one grey level


@dataclass(frozen=True)
class Case:
    """A real photo with its detected landmarks."""

    name: str
    photo: np.ndarray
    landmarks: np.ndarray


def lfw_cases(count: int, detector: FaceDetector | None = None) -> list[Case]:
    """The first photo of the first ``count`` LFW people, with YuNet landmarks."""
    from ..imageio import read_image

    detector = detector or FaceDetector()
    people = sorted(p for p in asset("faces/lfw").iterdir() if p.is_dir())[:count]
    cases = []
    for person in people:
        path = sorted(person.glob("*.jpg"))[0]
        photo = read_image(path)
        cases.append(Case(path.name, photo, detect_largest_face(detector, photo).landmarks))
    return cases


def random_mask_bytes(seed: int, size: int = 112, amplitude_levels: int = 16, scale: float = 1.0) -> bytes:
    """A random mask through the real file format (for op-only checks): dense +-amplitude noise."""
    rng = np.random.default_rng(seed)
    quantum = 2.0 / 255.0
    levels = rng.integers(-amplitude_levels, amplitude_levels + 1, size=(size, size, 3))
    mask = Mask(delta=(levels * quantum).astype(np.float32), frame=AlignedFrame(size=size, scale=scale), models=("random",))
    return encode_mask(mask)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _cloak(runner: Runner, mask_bytes: bytes, case: Case, tile: int | None) -> np.ndarray:
    device_mask = load_device_mask(mask_bytes, decode_mask(mask_bytes).frame.size)
    return cloak_frame(case.photo, device_mask, case.landmarks, runner, tile=tile)[0]


def compare(runner: Runner, mask_bytes: bytes, case: Case, tile: int | None = None) -> int:
    """Max |op - server apply| in grey levels over the whole photo."""
    server = apply_mask_with_landmarks(case.photo, decode_mask(mask_bytes), case.landmarks)
    return _max_diff(_cloak(runner, mask_bytes, case, tile), server)


def compare_to_torch(runner: Runner, mask_bytes: bytes, case: Case, tile: int | None = None) -> int:
    """Max |exported op - torch reference op| in grey levels over the whole photo."""
    reference = _cloak(torch_runner(mask_size=decode_mask(mask_bytes).frame.size), mask_bytes, case, None)
    return _max_diff(_cloak(runner, mask_bytes, case, tile), reference)


def torch_runner(io_dtype: str = "uint8", mask_size: int = 112, sampler: str = "grid_sample") -> Runner:
    import torch

    from .ondevice_op import AddAndClip, OpConfig

    module = AddAndClip(OpConfig(mask_size=mask_size, io_dtype=io_dtype, sampler=sampler)).eval()

    def run(roi: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(roi if io_dtype == "uint8" else roi.astype(np.float32))
            return module(x, torch.from_numpy(mask), torch.from_numpy(matrix)).numpy().astype(np.uint8)

    return run


def onnx_runner(path: Path, threads: int = 1) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda roi, mask, matrix: session.run(None, {"roi": roi, "mask": mask, "matrix": matrix})[0]


def tflite_runner(path: Path) -> Runner:
    """ai-edge-litert interpreter; inputs are matched by shape order roi, mask, matrix."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["name"])  # args_0, args_1, args_2
    output = interpreter.get_output_details()[0]["index"]

    def run(roi: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        for detail, value in zip(inputs, (roi, mask, matrix)):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        return interpreter.get_tensor(output).copy()

    return run


def coreml_runner(path: Path) -> Runner:
    """The Core ML program evaluated by the numpy MIL interpreter (float32 I/O, as on the phone)."""
    from .ondevice_mil import evaluate, load_program

    spec = load_program(path)

    def run(roi: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        outputs = evaluate(spec, {"roi": roi.astype(np.float32), "mask": mask, "matrix": matrix})
        return outputs["cloaked"].astype(np.uint8)

    return run


def runner_for(fmt: str, path: Path) -> Runner:
    return {"onnx": onnx_runner, "tflite": tflite_runner, "coreml": coreml_runner}[fmt](path)


def verify_exports(paths: dict[str, Path], mask_size: int, tile: int, photos: int = 3) -> Iterator[str]:
    """One line per format: worst difference to the server apply over a few LFW photos (raises if > 1)."""
    cases = lfw_cases(photos)
    masks = [random_mask_bytes(seed, mask_size) for seed in range(len(cases))]
    for fmt, path in paths.items():
        runner = runner_for(fmt, path)
        worst = max(compare(runner, m, c, tile if fmt == "tflite" else None) for m, c in zip(masks, cases))
        if worst > TOLERANCE_LEVELS:
            raise AssertionError(f"{fmt}: differs from the server apply by {worst} grey levels")
        yield f"{fmt:7s} max |op - server apply| = {worst}/255 over {len(cases)} LFW photos"


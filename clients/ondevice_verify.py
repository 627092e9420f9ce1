"""Verify exported on-device ops on Linux against the server's apply, on real LFW photos.

Runners adapt each runtime to ondevice_reference.Runner (fused: ONNX, Core ML) or TileStages (the
TFLite signatures); :func:`compare` cloaks one photo with a runner and with facecloak.apply and
returns the largest difference in grey levels. Masks of format 2 and 3 (perceptual budget) are both
covered: :func:`verify_exports` checks one of each per photo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..apply import apply_mask_with_landmarks
from ..assets import asset
from ..faces import FaceDetector
from ..faces.detect import detect_largest_face
from ..faces.align import AlignedFrame
from ..mask import Mask, decode_mask, encode_mask
from ..optimise.perceptual import PerceptualBudget
from .ondevice_reference import Runner, TileStages, cloak_frame, load_device_mask

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


def random_mask_bytes(seed: int, size: int = 112, amplitude_levels: int = 16, scale: float = 1.0,
                      perceptual: PerceptualBudget | None = None) -> bytes:
    """A random mask through the real file format (for op-only checks): dense +-amplitude noise (in grey
    levels, stored at two per level); with ``perceptual`` a format-3 file carrying that budget."""
    rng = np.random.default_rng(seed)
    quantum = 2.0 / 255.0
    levels = rng.integers(-amplitude_levels, amplitude_levels + 1, size=(size, size, 3))
    mask = Mask(delta=(levels * quantum).astype(np.float32), frame=AlignedFrame(size=size, scale=scale), models=("random",),
                perceptual=perceptual)
    return encode_mask(mask)


# A budget that clips hard on the random masks above (+-32 grey levels): 24 on texture, 6 on flat skin.
TEST_BUDGET = PerceptualBudget(eps=24 / 255, floor=0.25, contrast=0.06)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _cloak(runner: Runner | TileStages, mask_bytes: bytes, case: Case) -> np.ndarray:
    device_mask = load_device_mask(mask_bytes, decode_mask(mask_bytes).frame.size)
    return cloak_frame(case.photo, device_mask, case.landmarks, runner)[0]


@dataclass(frozen=True)
class Agreement:
    """How one cloaked photo differs from another: the largest difference and the share of pixels differing."""

    max_levels: int
    share: float  # of all photo pixel values (H x W x 3)


def agreement(runner: Runner | TileStages, mask_bytes: bytes, case: Case) -> Agreement:
    """|op - server apply| over the whole photo: max in grey levels and the share of values that differ."""
    server = apply_mask_with_landmarks(case.photo, decode_mask(mask_bytes), case.landmarks)
    diff = np.abs(_cloak(runner, mask_bytes, case).astype(np.int16) - server.astype(np.int16))
    return Agreement(int(diff.max()), float(np.count_nonzero(diff)) / diff.size)


def compare(runner: Runner | TileStages, mask_bytes: bytes, case: Case) -> int:
    """Max |op - server apply| in grey levels over the whole photo."""
    return agreement(runner, mask_bytes, case).max_levels


def compare_to_torch(runner: Runner | TileStages, mask_bytes: bytes, case: Case) -> int:
    """Max |exported op - torch reference op| in grey levels over the whole photo."""
    reference = _cloak(torch_runner(mask_size=decode_mask(mask_bytes).frame.size), mask_bytes, case)
    return _max_diff(_cloak(runner, mask_bytes, case), reference)


def torch_runner(io_dtype: str = "uint8", mask_size: int = 112, sampler: str = "grid_sample") -> Runner:
    """The fused ondevice_op.CloakOp in PyTorch (the reference every export is compared with)."""
    import torch

    from .ondevice_op import CloakOp, OpConfig

    module = CloakOp(OpConfig(mask_size=mask_size, io_dtype=io_dtype, sampler=sampler)).eval()

    def run(roi: np.ndarray, mask: np.ndarray, matrix: np.ndarray, budget: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(roi if io_dtype == "uint8" else roi.astype(np.float32))
            out = module(x, torch.from_numpy(mask), torch.from_numpy(matrix), torch.from_numpy(budget))
            return out.numpy().astype(np.uint8)

    return run


def torch_tile_stages(tile: int, mask_size: int = 112) -> TileStages:
    """The TFLite model's three signatures as the PyTorch modules it is converted from (gather sampler)."""
    import torch

    from .ondevice_op import AddAndClip, BudgetClip, FrameSample, OpConfig

    config = OpConfig(mask_size=mask_size, io_dtype="uint8", sampler="gather")
    modules = (FrameSample(config).eval(), BudgetClip(config).eval(), AddAndClip(config).eval())

    def wrap(module: torch.nn.Module) -> Callable[..., np.ndarray]:
        def run(*arrays: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)).numpy()
        return run

    return TileStages(*(wrap(m) for m in modules), tile=tile)


def onnx_runner(path: Path, threads: int = 1) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = ("roi", "mask", "matrix", "budget")
    return lambda *arrays: session.run(None, dict(zip(names, arrays)))[0]


def tflite_runner(path: Path, tile: int) -> TileStages:
    """ai-edge-litert interpreter over the model's signatures sample, budget, addclip (ondevice_tflite).

    Each signature's inputs are matched in argument order (litert-torch names them args_0, args_1, ...).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)

    def signature(name: str) -> Callable[..., np.ndarray]:
        runner = interpreter.get_signature_runner(name)
        details = runner.get_input_details()
        keys = sorted(details)  # args_0, args_1, args_2

        def run(*arrays: np.ndarray) -> np.ndarray:
            outputs = runner(**{k: np.asarray(a, details[k]["dtype"]) for k, a in zip(keys, arrays)})
            return next(iter(outputs.values())).copy()
        return run

    return TileStages(signature("sample"), signature("budget"), signature("addclip"), tile=tile)


def coreml_runner(path: Path) -> Runner:
    """The Core ML program evaluated by the numpy MIL interpreter (float32 I/O, as on the phone)."""
    from .ondevice_mil import evaluate, load_program

    spec = load_program(path)

    def run(roi: np.ndarray, mask: np.ndarray, matrix: np.ndarray, budget: np.ndarray) -> np.ndarray:
        outputs = evaluate(spec, {"roi": roi.astype(np.float32), "mask": mask, "matrix": matrix, "budget": budget})
        return outputs["cloaked"].astype(np.uint8)

    return run


def runner_for(fmt: str, path: Path, tile: int) -> Runner | TileStages:
    if fmt == "tflite":
        return tflite_runner(path, tile)
    return {"onnx": onnx_runner, "coreml": coreml_runner}[fmt](path)


def verify_exports(paths: dict[str, Path], mask_size: int, tile: int, photos: int = 3) -> Iterator[str]:
    """One line per format: worst difference to the server apply over a few LFW photos, each cloaked with a
    format-2 mask and a format-3 (perceptual budget) mask (raises if > 1)."""
    cases = lfw_cases(photos)
    pairs = [(case, random_mask_bytes(seed, mask_size, perceptual=budget))
             for seed, case in enumerate(cases) for budget in (None, TEST_BUDGET)]
    for fmt, path in paths.items():
        runner = runner_for(fmt, path, tile)
        results = [agreement(runner, mask, case) for case, mask in pairs]
        worst = max(r.max_levels for r in results)
        if worst > TOLERANCE_LEVELS:
            raise AssertionError(f"{fmt}: differs from the server apply by {worst} grey levels")
        share = max(r.share for r in results)
        yield (f"{fmt:7s} max |op - server apply| = {worst}/255 over {len(cases)} LFW photos x (format 2, 3) masks; "
               f"at most {share:.4%} of pixel values differ")


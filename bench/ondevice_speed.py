"""Per-frame cost of the on-device op on ONE CPU core (ONNX Runtime, intra_op_num_threads=1), beside a
naive full-frame numpy/OpenCV add-and-clip and the server's ROI OpenCV apply, in the same run.

The op path is what a phone does per frame: landmark checks, similarity fit + ROI plan, crop, run
the op on the crop, write it back in place. The naive path warps the mask over the whole frame and
adds/rounds/clips every pixel. Faces are a real LFW photo scaled so the eye distance is a given
fraction of the frame height. CPU time (this thread) is printed beside wall time because the
benchmark machine is shared: CPU time is what one core spends, wall time includes waiting.

    nice -n 10 python bench/ondevice_speed.py [--repeats 50] [--eye-fractions 0.04,0.06,0.09,0.12]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facecloak.apply import warp_mask_to_photo
from facecloak.export.ondevice import model_bytes
from facecloak.clients.ondevice_onnx import export_onnx
from facecloak.clients.ondevice_reference import cloak_in_place, load_device_mask, plan_roi
from facecloak.clients.ondevice_verify import lfw_cases, onnx_runner, random_mask_bytes
from facecloak.mask import decode_mask

FRAMES = {"1080p": (1080, 1920), "4K": (2160, 3840)}
TARGET_MS = {"1080p": 3.0, "4K": 6.0}


@dataclass(frozen=True)
class Scene:
    frame: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class Timing:
    wall_ms: float  # median
    cpu_ms: float  # median thread CPU time


def make_scene(shape: tuple[int, int], eye_fraction: float, photo: np.ndarray, landmarks: np.ndarray) -> Scene:
    """A frame with the LFW face pasted at its centre, scaled to the requested eye distance."""
    eye_px = np.linalg.norm(landmarks[1] - landmarks[0])
    factor = eye_fraction * shape[0] / eye_px
    face = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    frame = np.full((*shape, 3), 90, np.uint8)
    y0, x0 = (shape[0] - face.shape[0]) // 2, (shape[1] - face.shape[1]) // 2
    frame[y0:y0 + face.shape[0], x0:x0 + face.shape[1]] = face
    return Scene(frame, landmarks * factor + np.array([x0, y0]))


def naive_full_frame(frame: np.ndarray, mask_values: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Warp the mask over the whole frame and add/round/clip every pixel (what not to do on a phone)."""
    warped = cv2.warpAffine(mask_values, matrix, (frame.shape[1], frame.shape[0]),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    return np.clip(np.round(frame.astype(np.float32) + warped), 0, 255).astype(np.uint8)


def opencv_roi_in_place(frame: np.ndarray, mask, landmarks: np.ndarray) -> None:
    """The server's apply restricted to the ROI (warp_mask_to_photo + add/round/clip), in place."""
    warped, (x0, y0, x1, y1) = warp_mask_to_photo(mask, landmarks, frame)
    region = frame[y0:y1, x0:x1].astype(np.float32) + warped * 255.0
    frame[y0:y1, x0:x1] = np.clip(np.round(region), 0, 255).astype(np.uint8)


def measure(fn: Callable[[], object], repeats: int) -> Timing:
    for _ in range(3):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        fn()
        cpus.append((time.thread_time() - cpu) * 1e3)
        walls.append((time.perf_counter() - wall) * 1e3)
    return Timing(float(np.median(walls)), float(np.median(cpus)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--eye-fractions", default="0.04,0.06,0.09,0.12")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for everything below
    cv2.setNumThreads(1)
    onnx_path = export_onnx(Path(tempfile.mkdtemp()) / "op.onnx")
    runner = onnx_runner(onnx_path, threads=1)
    mask_bytes = random_mask_bytes(0)
    mask, server_mask = load_device_mask(mask_bytes, 112), decode_mask(mask_bytes)
    case = lfw_cases(1)[0]
    print(f"ONNX model {model_bytes(onnx_path)} bytes; ONNX Runtime {__import__('onnxruntime').__version__}, "
          "1 intra-op thread, process pinned to 1 core; ms are medians (CPU = this thread's CPU time)")
    print(f"{'frame':6s} {'eye/h':>5s} {'ROI':>9s} {'op wall':>8s} {'op CPU':>7s} {'ns/px':>6s} "
          f"{'naive CPU':>9s} {'naive/op':>8s} {'cv2 ROI CPU':>11s} {'target':>7s}")
    for label, shape in FRAMES.items():
        for fraction in (float(f) for f in args.eye_fractions.split(",")):
            scene = make_scene(shape, fraction, case.photo, case.landmarks)
            plan = plan_roi(mask, scene.landmarks, shape)
            full_matrix = plan.matrix.astype(np.float64)
            full_matrix[:, 2] -= full_matrix[:, :2] @ np.array(plan.box[:2], dtype=np.float64)
            work = scene.frame.copy()
            op = measure(lambda: cloak_in_place(work, mask, scene.landmarks, runner), args.repeats)
            naive = measure(lambda: naive_full_frame(scene.frame, mask.values, full_matrix), max(5, args.repeats // 5))
            roi_cv = measure(lambda: opencv_roi_in_place(work, server_mask, scene.landmarks), args.repeats)
            width, height = plan.box[2] - plan.box[0], plan.box[3] - plan.box[1]
            verdict = "ok" if op.cpu_ms <= TARGET_MS[label] else "MISS"
            print(f"{label:6s} {fraction:5.2f} {width:4d}x{height:<4d} {op.wall_ms:8.2f} {op.cpu_ms:7.2f} "
                  f"{op.cpu_ms * 1e6 / (width * height):6.1f} {naive.cpu_ms:9.2f} {naive.cpu_ms / op.cpu_ms:7.1f}x "
                  f"{roi_cv.cpu_ms:11.2f} {TARGET_MS[label]:5.1f}ms {verdict}")


if __name__ == "__main__":
    main()

"""Per-frame cost of the on-device op on ONE CPU core (ONNX Runtime, intra_op_num_threads=1), beside a
naive full-frame numpy/OpenCV add-and-clip in the same run.

The op path is what a phone does per frame: similarity fit + ROI plan, crop, run the op on the crop,
write it back. The naive path warps the mask over the whole frame, adds, rounds and clips everything.
Faces are a real LFW photo scaled so the eye distance is a given fraction of the frame height.

    nice -n 10 python bench/ondevice_speed.py [--repeats 50] [--eye-fractions 0.04,0.06,0.09]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facecloak.clients.ondevice_export import export_onnx, model_bytes
from facecloak.clients.ondevice_reference import cloak_in_place, load_device_mask, plan_roi
from facecloak.clients.ondevice_verify import lfw_cases, onnx_runner, random_mask_bytes

FRAMES = {"1080p": (1080, 1920), "4K": (2160, 3840)}
TARGET_MS = {"1080p": 3.0, "4K": 6.0}


@dataclass(frozen=True)
class Scene:
    frame: np.ndarray
    landmarks: np.ndarray


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


def best_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall time in ms after a warm-up."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--eye-fractions", default="0.04,0.06,0.09")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for everything below
    cv2.setNumThreads(1)
    onnx_path = export_onnx(Path(tempfile.mkdtemp()) / "op.onnx")
    runner = onnx_runner(onnx_path, threads=1)
    mask_bytes = random_mask_bytes(0)
    mask = load_device_mask(mask_bytes, 112)
    case = lfw_cases(1)[0]
    print(f"ONNX model {model_bytes(onnx_path)} bytes; ONNX Runtime, 1 thread, pinned to 1 core")
    print(f"{'frame':6s} {'eye/h':>6s} {'ROI':>10s} {'op med':>8s} {'op min':>8s} {'naive med':>10s} "
          f"{'speed-up':>8s} {'target':>7s}")
    for label, shape in FRAMES.items():
        for fraction in (float(f) for f in args.eye_fractions.split(",")):
            scene = make_scene(shape, fraction, case.photo, case.landmarks)
            plan = plan_roi(mask, scene.landmarks, shape)
            full_matrix = plan.matrix.astype(np.float64)
            full_matrix[:, 2] -= full_matrix[:, :2] @ np.array(plan.box[:2], dtype=np.float64)
            op_med, op_min = best_ms(lambda: cloak_in_place(scene.frame, mask, scene.landmarks, runner), args.repeats)
            naive_med, _ = best_ms(lambda: naive_full_frame(scene.frame, mask.values, full_matrix), max(5, args.repeats // 5))
            roi = f"{plan.box[2] - plan.box[0]}x{plan.box[3] - plan.box[1]}"
            verdict = "ok" if op_med <= TARGET_MS[label] else "MISS"
            print(f"{label:6s} {fraction:6.2f} {roi:>10s} {op_med:8.2f} {op_min:8.2f} {naive_med:10.2f} "
                  f"{naive_med / op_med:7.1f}x {TARGET_MS[label]:5.1f}ms {verdict}")
    print("op = landmark checks + similarity fit + ROI plan + crop + ONNX op on the ROI + in-place write-back; "
          "naive = full-frame cv2.warpAffine + numpy add/round/clip")


if __name__ == "__main__":
    main()

"""What people see, preset by preset (issue 13): a grid of held-out LFW faces, clean | each preset's cloak |
its FLIP error map, side by side.

Per person (the benchmark's seeded order) one mask per preset is learned from photo 1 by the core's
enrollment (default ensemble, torch backend, seed from the person as in the benchmark) and applied with
``facecloak.apply`` to photo 2 at full resolution; the face box + 10 % is shown at the photo's own resolution,
enlarged with nearest-neighbour pixels (``evaluate.report.save_visibility_grid``). The per-face FLIP figures
are printed and written into the tiles.

    FACECLOAK_BACKEND=torch-cpu python bench/visibility_grid.py -o docs/eval/visibility-presets/grid.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from facecloak.apply import apply_mask_with_landmarks, face_region, measure_quality
from facecloak.enroll import EnrollConfig, Enroller, with_strength
from facecloak.evaluate.protocol import EvalConfig, anchor_gallery, load_dataset, person_seed
from facecloak.evaluate.report import save_visibility_grid
from facecloak.faces import FaceDetector, detect_largest_face
from facecloak.imageio import read_image
from facecloak.presets import STRENGTHS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--people", type=int, default=8, help="first N people of the benchmark's seeded order")
    parser.add_argument("--presets", default="standard,subtle", help="comma-separated --strength presets")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
          f"| backend {os.environ.get('FACECLOAK_BACKEND', 'default')}, threads {args.threads}")
    presets = args.presets.split(",")
    base = EnrollConfig(check_views=0)
    configs = {p: with_strength(base, STRENGTHS[p]) for p in presets}
    dataset = load_dataset(EvalConfig())
    detector = FaceDetector()
    enroller = Enroller(detector=detector, gallery=anchor_gallery(base.surrogates, dataset.anchor_names))
    grid = []
    for person in dataset.people[: args.people]:
        enrollment, probe = read_image(person.photos[0]), read_image(person.photos[1])
        face = detect_largest_face(detector, probe)
        region = face_region(face.box, probe.shape)
        if region is None:
            continue
        x0, y0, x1, y1 = region
        cloaks = {}
        for preset, config in configs.items():
            mask = enroller.enroll(enrollment, replace(config, seed=person_seed(0, person.name))).mask
            cloaked = apply_mask_with_landmarks(probe, mask, face.landmarks)
            q = measure_quality(probe, cloaked, face.box)
            print(f"{person.name:24s} {preset:9s} face FLIP {q.flip_mean:.3f}, {100 * q.flip_visible:4.1f} % > 0.2, "
                  f"face SSIM {q.face_ssim:.3f}", flush=True)
            cloaks[preset] = cloaked[y0:y1, x0:x1]
        grid.append((person.name, probe[y0:y1, x0:x1], cloaks))
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        save_visibility_grid(grid, Path(args.output))  # after every person: a cut-short run still leaves a grid
    print("wrote", args.output, "| load:", ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()

"""Measure a model card's ``match_threshold``: cosine at a FAR on clean LFW impostor pairs.

The same gallery, attacker and threshold rule as ``facecloak eval`` (docs/eval/report.md): the default
protocol's clean attacker gallery (100 LFW people x 10 photos + 500 distractors, YuNet re-detection,
each model's own alignment, ONNX Runtime), every pair of different identities as an impostor pair.

    python bench/card_thresholds.py --models ms1m,faceplugin,sirius
    python bench/card_thresholds.py --models sface --gallery-people 20 --distractors 100   # a quick subset
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import cv2
import torch

from facecloak.evaluate.attacker import Attacker, build_attacker_gallery
from facecloak.evaluate.protocol import EvalConfig, load_dataset


def main(argv: list[str] | None = None) -> None:
    defaults = EvalConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sface,facenet", help="comma-separated registered model names")
    parser.add_argument("--far", type=float, default=defaults.far)
    parser.add_argument("--gallery-people", type=int, default=defaults.gallery_people)
    parser.add_argument("--distractors", type=int, default=defaults.distractors)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for ONNX Runtime and OpenCV")
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    cfg = replace(defaults, people=min(defaults.people, args.gallery_people), gallery_people=args.gallery_people,
                  distractors=args.distractors, targets=models, surrogates=models, far=args.far)
    cfg.validate()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    dataset = load_dataset(cfg)
    start = time.perf_counter()
    people = [(p.name, p.photos) for p in dataset.gallery_people]
    gallery = build_attacker_gallery(Attacker(models, threads=args.threads), people, dataset.attacker_distractors)
    thresholds = gallery.thresholds(cfg.far)
    print(json.dumps({
        "far": cfg.far, "photos": len(gallery.keys), "identities": len(gallery.identities),
        "seconds": round(time.perf_counter() - start, 1),
        "thresholds": {m: {"threshold": round(t, 4), "impostor_pairs": n} for m, (t, n) in thresholds.items()},
    }, indent=2))


if __name__ == "__main__":
    main()

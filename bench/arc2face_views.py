"""Arc2Face views benchmark: time per generated view, per stage, DPM-Solver vs LCM, vs CPU augmentation.

Run: .venv/bin/python bench/arc2face_views.py [--size 64] [--views 4] [--model-dir DIR] [--onnx]

Without --model-dir it builds the tiny random model (arc2face_tiny) in a temp folder: the figures
then measure the pipeline's overhead, not Arc2Face's real cost (see docs/arc2face.md for the
estimated cost of the real 860M-parameter UNet). With --model-dir on a GPU machine it times the
real model with the same code.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import sys
from pathlib import Path

import numpy as np
import torch

from facecloak.assets import asset, assets_dir
from facecloak.faces import AlignedFrame, FaceDetector, detect_largest_face
from facecloak.imageio import read_image
from facecloak.views import AugmentViews, ViewRequest
from facecloak.export.pipeline import save_artefacts
from facecloak.engines.arc2face_runtime import OnnxArc2FaceSampler
from facecloak.export.arc2face import ExportSpec, export_arc2face, to_artefacts
from facecloak.views.arc2face_identity import OnnxArcFace
from facecloak.views.arc2face_layout import verify_layout
from facecloak.views.arc2face_sampler import Arc2FaceSampler, SamplerConfig, load_models
from facecloak.views.arc2face_screen import ScreenConfig, ViewScreen
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny model lives beside the tests
from arc2face_tiny import build_tiny_model_dir  # noqa: E402


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def tiny_lora(root: Path, out: Path) -> Path:
    """A random LoRA for the tiny UNet (stands in for LCM-LoRA: same loading and fusing code)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(root / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionLoraLoaderMixin.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet))
    return out / "pytorch_lora_weights.safetensors"


def sampler_row(name: str, sampler: Arc2FaceSampler, identity: np.ndarray, views: int) -> float:
    seeds = list(range(views))
    cond = sampler.positive(torch.from_numpy(identity)[None])
    sampler.sample(identity, seeds[:1])  # warm-up (allocator, kernels)
    t_text, _ = timed(lambda: sampler.positive(torch.from_numpy(identity)[None]), 3)
    t_denoise, latents = timed(lambda: sampler.denoise(cond.expand(views, -1, -1), seeds))
    t_decode, _ = timed(lambda: sampler.decode(latents))
    per_view = (t_denoise + t_decode) / views + t_text / views
    print(f"{name:<28} {sampler.steps:>5} {t_text * 1e3:>9.1f} {t_denoise / views * 1e3:>12.1f} "
          f"{t_decode / views * 1e3:>10.1f} {per_view * 1e3:>11.1f}")
    return per_view


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64, help="image side (real Arc2Face: 512)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--model-dir", type=Path, help="a real Arc2Face model directory (default: tiny random)")
    parser.add_argument("--onnx", action="store_true", help="also export the graphs and time the ONNX Runtime sampler")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())  # shared CI boxes: figures scale with load
    print(f"device {device}, torch threads {torch.get_num_threads()}, load average {load}, "
          f"image {args.size}px, {args.views} views")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.model_dir or build_tiny_model_dir(Path(tmp) / "tiny", asset("models/facenet_casia_160.onnx"))
        layout = verify_layout(root)
        identity = np.random.default_rng(0).normal(size=512).astype(np.float32)
        identity /= np.linalg.norm(identity)
        print(f"\n{'sampler':<28} {'steps':>5} {'text ms':>9} {'denoise ms/v':>12} {'decode ms/v':>10} {'total ms/v':>11}")
        dpm_cfg = SamplerConfig(size=args.size, batch_size=args.views)
        t_load, models = timed(lambda: load_models(layout, dpm_cfg))
        dpm = sampler_row("DPM-Solver++ 25, cfg 3.0", Arc2FaceSampler(models, dpm_cfg), identity, args.views)
        lora = layout.lcm_lora or tiny_lora(Path(root), Path(tmp) / "lora")
        lcm_cfg = SamplerConfig(size=args.size, batch_size=args.views, lcm=True, lcm_lora_path=lora)
        lcm = sampler_row("LCM-LoRA 4, no cfg", Arc2FaceSampler(load_models(layout, lcm_cfg), lcm_cfg), identity, args.views)
        print(f"load (all components): {t_load:.2f} s;  LCM speed-up: {dpm / lcm:.1f}x")
        if args.onnx:
            out = Path(tmp) / "onnx"
            graphs = export_arc2face(load_models(layout, SamplerConfig(device="cpu", dtype="float32")), out, ExportSpec(size=args.size))
            save_artefacts(out, to_artefacts(graphs, out, layout.root, ExportSpec(size=args.size)))
            ort_row = sampler_row("ONNX Runtime, DPM 25, cfg 3", OnnxArc2FaceSampler(out, root, dpm_cfg), identity, args.views)
            print(f"ONNX Runtime / PyTorch time per view: {ort_row / dpm:.2f}")

    # Screening is the same for any model: YuNet + alignment + identity embedding per candidate.
    detector = FaceDetector()
    ident = OnnxArcFace.from_file(asset("models/facenet_casia_160.onnx"))
    photos = [read_image(p) for p in sorted((assets_dir() / "faces/lfw/Tony_Blair").glob("*.jpg"))[: args.views]]
    source = ident.embed(photos[0], detect_largest_face(detector, photos[0]).landmarks)
    screen = ViewScreen(detector, ident, AlignedFrame(), ScreenConfig())
    screen(photos[0], source)
    t_screen, _ = timed(lambda: [screen(p, source) for p in photos], 3)
    request = ViewRequest(photos[0], detect_largest_face(detector, photos[0]), AlignedFrame(), args.views, 0)
    t_aug, _ = timed(lambda: AugmentViews().generate(request), 3)
    print(f"\nscreen (detect+align+identity) {t_screen / len(photos) * 1e3:.1f} ms/view on 250px LFW photos")
    print(f"CPU augmentation default       {t_aug / args.views * 1e3:.2f} ms/view "
          f"(tiny DPM path / augmentation: {dpm / (t_aug / args.views):.0f}x)")


if __name__ == "__main__":
    main()

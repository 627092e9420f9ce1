"""``facecloak-export``: the offline export stage (surrogates, PGD step, TensorRT, Triton, on-device op).

    facecloak-export surrogates --models sface,ms1m,faceplugin      # ONNX, dynamic batch, verified vs PyTorch
    facecloak-export step --models sface,ms1m,faceplugin --views 8  # the PGD step graph + resampling table
    facecloak-export aot --models sface,ms1m,faceplugin --views 8   # the PGD step compiled for this CPU (aot-cpu)
    facecloak-export aot --bf16                            # ... with the surrogates in bfloat16 (CPUs with AMX)
    facecloak-export build --precision fp16                # TensorRT engines (GPU host only)
    facecloak-export triton --repo triton_models           # Triton model repository
    facecloak-export ondevice --formats onnx --verify      # the on-device add-and-clip op
    facecloak-export arc2face MODEL_DIR                    # Arc2Face view-generator graphs
    facecloak-export all                                   # surrogates + step + on-device op

Everything goes to --out (default engines/build/) and is listed in its manifest.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from facecloak.engines.manifest import Artefact, sha256_file
from facecloak.engines.runtimes import default_build_dir
from facecloak.command import comma_list, run_command
from facecloak.errors import BadOptionError
from facecloak.presets import DEFAULT_SURROGATES

ONDEVICE_SUFFIXES = {".onnx", ".tflite", ".mlmodel"}


def _export_config(args: argparse.Namespace, models: tuple[str, ...] | None = None):  # noqa: ANN202
    from .pipeline import ExportConfig

    return ExportConfig(out=args.out, models=models or args.models, views=args.views, size=args.size, members=args.members,
                        verify=not args.no_verify)


def cmd_surrogates(args: argparse.Namespace) -> int:
    from .pipeline import export_surrogates

    export_surrogates(_export_config(args))
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    from facecloak.optimise import PGDConfig

    from .pipeline import export_step_graph

    export_step_graph(_export_config(args), PGDConfig())
    return 0


def cmd_aot(args: argparse.Namespace) -> int:
    from facecloak.optimise import PGDConfig

    from .pipeline import export_aot_step

    export_aot_step(_export_config(args), PGDConfig(bf16_surrogates=args.bf16))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from facecloak.export.tensorrt_build import BuildConfig, build_engines

    build_engines(BuildConfig(args.out, args.precision, max_batch=args.max_batch))
    return 0


def cmd_triton(args: argparse.Namespace) -> int:
    from .triton import TritonConfig, emit_repository

    for model_dir in emit_repository(TritonConfig(args.out, args.repo, args.backend, args.max_batch)):
        print(f"triton model {model_dir}")
    return 0


def cmd_ondevice(args: argparse.Namespace) -> int:
    from .ondevice import run

    return run(args)


def cmd_arc2face(args: argparse.Namespace) -> int:
    from .arc2face import run_export  # torch + diffusers: only when asked for

    return run_export(args)


def record_ondevice(out: Path, folder: Path, seconds: float) -> list[Artefact]:
    """Add the on-device models in ``folder`` to the manifest of ``out``."""
    from .pipeline import save_artefacts

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in ONDEVICE_SUFFIXES)
    if not files:
        raise BadOptionError(f"the on-device exporter wrote no model into {folder}")
    artefacts = [Artefact(name=f"ondevice_{p.stem}{p.suffix.replace('.', '_')}", kind="ondevice",
                          file=p.relative_to(out).as_posix(), sha256=sha256_file(p), seconds=round(seconds, 1))
                 for p in files]
    save_artefacts(out, artefacts)
    return artefacts


def cmd_all(args: argparse.Namespace) -> int:
    """Surrogates, the step graph of the surrogate set, and the on-device op, all verified."""
    cmd_surrogates(args)
    cmd_step(args)
    from .ondevice import add_ondevice_parser

    start, folder = time.perf_counter(), args.out / "ondevice"
    ondevice = argparse.ArgumentParser()
    add_ondevice_parser(ondevice.add_subparsers())
    code = cmd_ondevice(ondevice.parse_args(["ondevice", "--out", str(folder), "--formats", args.ondevice_formats, "--verify"]))
    if code != 0:
        return code
    record_ondevice(args.out, folder, time.perf_counter() - start)
    print(f"all artefacts and {args.out / 'manifest.json'} written")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecloak-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--out", type=Path, default=default_build_dir(), help="build folder (default engines/build)")
        p.set_defaults(func=func)
        return p

    for name, func, help_text in (("surrogates", cmd_surrogates, "surrogates to ONNX with a dynamic batch"),
                                  ("step", cmd_step, "the PGD step as one ONNX graph"),
                                  ("aot", cmd_aot, "the PGD step compiled for this CPU (AOTInductor; serve with aot-cpu)"),
                                  ("all", cmd_all, "surrogates + step + on-device op")):
        p = add(name, func, help_text)
        p.add_argument("--models", type=comma_list, default=DEFAULT_SURROGATES, help="comma list of surrogates")
        p.add_argument("--views", type=int, default=8, help="views per step graph")
        p.add_argument("--members", type=int, default=0, help="step of a mask set of K stepped together (0: one mask)")
        p.add_argument("--size", type=int, default=112, help="aligned frame side in px")
        p.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
        if name == "aot":
            p.add_argument("--bf16", action="store_true",
                           help="the surrogates in bfloat16 (PGDConfig.bf16_surrogates; with AMX, 1.8x faster for FaceNet, no faster for the default ensemble)")
        if name == "all":
            p.add_argument("--ondevice-formats", default="onnx", help="formats for the on-device op")
    p = add("build", cmd_build, "TensorRT engines from the ONNX graphs (GPU host)")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--max-batch", type=int, default=64)
    p = add("triton", cmd_triton, "Triton model repository")
    p.add_argument("--repo", type=Path, required=True, help="model repository folder to write")
    p.add_argument("--backend", default="onnx", choices=("onnx", "tensorrt"))
    p.add_argument("--max-batch", type=int, default=64)
    from .ondevice import add_ondevice_parser

    add_ondevice_parser(sub)
    p = sub.add_parser("arc2face", help="export the Arc2Face text encoder, UNet and VAE decoder to ONNX")
    p.add_argument("--out", type=Path, default=default_build_dir(), help="build folder (default engines/build)")
    p.add_argument("model_dir", type=Path, help="Arc2Face model directory (docs/arc2face.md)")
    p.add_argument("--size", type=int, default=512, help="image side the UNet/VAE graphs are traced at")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.set_defaults(func=cmd_arc2face)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("facecloak-export", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())

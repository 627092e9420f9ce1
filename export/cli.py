"""``facecloak-export``: the offline export stage (surrogates, PGD step, TensorRT, Triton, on-device op).

    facecloak-export surrogates --models sface,facenet     # ONNX, dynamic batch, verified vs PyTorch
    facecloak-export step --models sface,facenet --views 8 # the PGD step graph + resampling table
    facecloak-export build --precision fp16                # TensorRT engines (GPU host only)
    facecloak-export triton --repo triton_models           # Triton model repository
    facecloak-export ondevice --formats onnx --verify      # the on-device add-and-clip op (issue 5's exporter)
    facecloak-export arc2face ...                          # Arc2Face view-generator engines (its exporter)
    facecloak-export all                                   # surrogates + step + on-device op

Everything goes to --out (default engines/build/) and is listed in its manifest.json.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from facecloak.engines.manifest import Artefact, sha256_file
from facecloak.engines.runtimes import default_build_dir
from facecloak.errors import BadOptionError, FaceCloakError

# Subcommands owned by other stages: everything after the name goes to their main(argv).
PASSTHROUGH = {"ondevice": "facecloak.clients.ondevice_export", "arc2face": "facecloak.views.arc2face_export"}
ONDEVICE_SUFFIXES = {".onnx", ".tflite", ".mlmodel"}


def _models(text: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    if not models:
        raise argparse.ArgumentTypeError("give at least one model name")
    return models


def _export_config(args: argparse.Namespace, models: tuple[str, ...] | None = None):  # noqa: ANN202
    from .pipeline import ExportConfig

    return ExportConfig(out=args.out, models=models or args.models, views=args.views, size=args.size, verify=not args.no_verify)


def cmd_surrogates(args: argparse.Namespace) -> int:
    from .pipeline import export_surrogates

    export_surrogates(_export_config(args))
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    from facecloak.optimise import PGDConfig

    from .pipeline import export_step_graph

    export_step_graph(_export_config(args), PGDConfig())
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from facecloak.engines.tensorrt_build import BuildConfig, build_engines

    build_engines(BuildConfig(args.out, args.precision, max_batch=args.max_batch))
    return 0


def cmd_triton(args: argparse.Namespace) -> int:
    from .triton import TritonConfig, emit_repository

    for model_dir in emit_repository(TritonConfig(args.out, args.repo, args.backend, args.max_batch)):
        print(f"triton model {model_dir}")
    return 0


def run_passthrough(command: str, argv: Sequence[str]) -> int:
    """Call another stage's exporter (``main(argv)``) if this install has it; imported only when used."""
    module_name = PASSTHROUGH[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise BadOptionError(f"`facecloak-export {command}` needs {module_name}, which is not part of this install") from None
        raise
    if not callable(getattr(module, "main", None)):
        raise BadOptionError(f"{module_name} has no main(argv)")
    return int(module.main(list(argv)) or 0)


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
    start, folder = time.perf_counter(), args.out / "ondevice"
    code = run_passthrough("ondevice", ["--out", str(folder), "--formats", args.ondevice_formats, "--verify"])
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
                                  ("all", cmd_all, "surrogates + step + on-device op")):
        p = add(name, func, help_text)
        p.add_argument("--models", type=_models, default=("sface", "facenet"), help="comma list of surrogates")
        p.add_argument("--views", type=int, default=8, help="views per step graph")
        p.add_argument("--size", type=int, default=112, help="aligned frame side in px")
        p.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
        if name == "all":
            p.add_argument("--ondevice-formats", default="onnx", help="formats for the on-device op")
    p = add("build", cmd_build, "TensorRT engines from the ONNX graphs (GPU host)")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--max-batch", type=int, default=64)
    p = add("triton", cmd_triton, "Triton model repository")
    p.add_argument("--repo", type=Path, required=True, help="model repository folder to write")
    p.add_argument("--backend", default="onnx", choices=("onnx", "tensorrt"))
    p.add_argument("--max-batch", type=int, default=64)
    for name, module in PASSTHROUGH.items():  # listed for --help; main() hands their arguments over
        sub.add_parser(name, help=f"run {module} (its own options follow)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PASSTHROUGH:
            return run_passthrough(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except FaceCloakError as exc:
        print(f"facecloak-export: error [{exc.reason}]: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())

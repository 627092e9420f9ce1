"""Export the on-device op (perceptual budget + add-and-clip) to ONNX, Core ML (ML Program) and TFLite.

``facecloak-export ondevice`` registers it through :func:`add_ondevice_parser`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from facecloak.clients.ondevice_onnx import export_onnx
from facecloak.clients.ondevice_op import CloakOp, OpConfig, cloak_example_inputs
from facecloak.errors import BadOptionError, FaceCloakError

FORMATS = ("onnx", "coreml", "tflite")
MAX_MODEL_BYTES = 1 << 20
MAX_ROI_SIDE = 4096
LITERT_ENV_VAR = "FACECLOAK_LITERT_PYTHON"


class ExportUnavailableError(FaceCloakError):
    """A converter this format needs is not installed here."""

    reason = "EXPORT_UNAVAILABLE"
    exit_code = 9


@dataclass(frozen=True)
class ExportConfig:
    out_dir: Path
    mask_size: int = 112
    tile: int = 256  # TFLite only: fixed ROI tile (litert-torch cannot export a dynamic ROI)
    formats: tuple[str, ...] = FORMATS
    litert_python: str | None = None

    def __post_init__(self) -> None:
        unknown = [fmt for fmt in self.formats if fmt not in FORMATS]
        if unknown or not self.formats:
            raise BadOptionError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
        if not 8 <= self.mask_size <= 1024:
            raise BadOptionError(f"--mask-size must be in 8..1024, got {self.mask_size}")
        if not 16 <= self.tile <= 512:
            raise BadOptionError(f"--tile must be in 16..512, got {self.tile}")


def model_bytes(path: Path) -> int:
    """Size of a model file or of an .mlpackage directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export_coreml(path: Path, mask_size: int = 112) -> Path:
    """Core ML ML Program (.mlpackage), iOS 16+, fp32 compute, float32 NHWC ROI with a ranged size.

    Inputs roi, mask, matrix, budget (ondevice_op.CloakOp); output cloaked.
    """
    try:
        import coremltools as ct
    except ImportError as exc:
        raise ExportUnavailableError("Core ML export needs coremltools: pip install 'facecloak[ondevice]'") from exc
    import numpy as np
    import torch

    config = OpConfig(mask_size=mask_size, io_dtype="float32")
    side = torch.export.Dim("side_h", min=8, max=MAX_ROI_SIDE), torch.export.Dim("side_w", min=8, max=MAX_ROI_SIDE)
    program = torch.export.export(CloakOp(config).eval(), cloak_example_inputs(config),
                                  dynamic_shapes={"roi": {1: side[0], 2: side[1]}, "mask": None, "matrix": None, "budget": None})
    roi_shape = ct.Shape(shape=(1, ct.RangeDim(8, MAX_ROI_SIDE), ct.RangeDim(8, MAX_ROI_SIDE), 3))
    model = ct.convert(
        program.run_decompositions({}),
        inputs=[ct.TensorType(name="roi", shape=roi_shape, dtype=np.float32),
                ct.TensorType(name="mask", shape=(mask_size, mask_size, 3), dtype=np.float32),
                ct.TensorType(name="matrix", shape=(2, 3), dtype=np.float32),
                ct.TensorType(name="budget", shape=(3,), dtype=np.float32)],
        outputs=[ct.TensorType(name="cloaked")],
        convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,  # fp16 would round the 0..255 sum to 1/8 level steps
    )
    model.short_description = "FaceCloak on-device perceptual budget + add-and-clip (docs/ondevice.md)"
    model.save(str(path))
    return path


def litert_python(explicit: str | None = None) -> str:
    """The python of the separate litert venv, or ExportUnavailableError telling how to create it."""
    repo_default = Path(__file__).resolve().parents[1] / ".venv-litert" / "bin" / "python"
    candidate = explicit or os.environ.get(LITERT_ENV_VAR) or str(repo_default)
    if not Path(candidate).exists():
        raise ExportUnavailableError(
            f"TFLite export needs the separate litert-torch environment ({candidate} not found): "
            f"run clients/make_litert_env.sh, or pass --litert-python / set {LITERT_ENV_VAR}")
    return candidate


def export_tflite(path: Path, mask_size: int = 112, tile: int = 256, python: str | None = None) -> Path:
    """TFLite via litert-torch in its own venv; a failed conversion raises with the converter's reason."""
    command = [litert_python(python), "-m", "facecloak.clients.ondevice_tflite", str(path),
               "--mask-size", str(mask_size), "--tile", str(tile)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not path.exists():
        lines = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-3:]
        raise ExportUnavailableError(f"litert-torch could not convert the op: {' | '.join(lines[-3:])}")
    return path


def export_all(config: ExportConfig) -> dict[str, Path]:
    """Write the requested formats into out_dir; each file is checked against the 1 MB budget."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"facecloak_addclip_{config.mask_size}"
    paths: dict[str, Path] = {}
    for fmt in config.formats:
        if fmt == "onnx":
            paths[fmt] = export_onnx(config.out_dir / f"{stem}.onnx", config.mask_size)
        elif fmt == "coreml":
            paths[fmt] = export_coreml(config.out_dir / f"{stem}.mlpackage", config.mask_size)
        else:
            paths[fmt] = export_tflite(config.out_dir / f"{stem}_tile{config.tile}.tflite", config.mask_size,
                                       config.tile, config.litert_python)
        size = model_bytes(paths[fmt])
        if size > MAX_MODEL_BYTES:
            raise FaceCloakError(f"{paths[fmt].name} is {size} bytes, over the 1 MB on-device budget")
    return paths


def add_ondevice_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ondevice`` on a parent ``facecloak-export`` parser (sets ``func``)."""
    parser = subparsers.add_parser("ondevice", help="export the on-device add-and-clip op", description=__doc__)
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/ondevice", help="output folder")
    parser.add_argument("--mask-size", type=int, default=112, help="mask side S the models accept")
    parser.add_argument("--tile", type=int, default=256, help="TFLite ROI tile side")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma list of onnx,coreml,tflite")
    parser.add_argument("--litert-python", default=None, help=f"python of the litert venv (or ${LITERT_ENV_VAR})")
    parser.add_argument("--verify", action="store_true", help="check each model against the server apply on LFW photos")


def run(args: argparse.Namespace) -> int:
    formats = tuple(f for f in args.formats.split(",") if f)
    config = ExportConfig(Path(args.out), args.mask_size, args.tile, formats, args.litert_python)
    paths = export_all(config)
    for fmt, path in paths.items():
        print(f"{fmt:7s} {path}  {model_bytes(path)} bytes")
    if args.verify:
        from facecloak.clients.ondevice_verify import verify_exports

        for line in verify_exports(paths, config.mask_size, config.tile):
            print(line)
    return 0

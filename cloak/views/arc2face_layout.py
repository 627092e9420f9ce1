"""The Arc2Face model directory that ops provide: layout, manifest of checksums, verification.

Nothing is ever fetched from a hub: the loader reads only this directory. Layout (docs/arc2face.md
says where each file comes from)::

    <root>/manifest.json                 {"format": "facecloak-arc2face/1", "files": {relpath: sha256}}
    <root>/unet/config.json + diffusion_pytorch_model.safetensors   Arc2Face UNet (upstream arc2face/)
    <root>/text_encoder/config.json + model.safetensors|pytorch_model.bin   Arc2Face CLIP encoder (encoder/)
    <root>/vae/config.json + diffusion_pytorch_model.safetensors    SD-1.5 VAE
    <root>/tokenizer/vocab.json, merges.txt, tokenizer_config.json  SD-1.5 CLIP tokenizer
    <root>/scheduler/scheduler_config.json                          SD-1.5 noise schedule
    <root>/face_id/arcface.onnx (+ scrfd_10g_bnkps.onnx)            identity model (insightface pack)
    <root>/lcm_lora/pytorch_lora_weights.safetensors                optional LCM-LoRA (few-step mode)

``python -m facecloak.views.arc2face_layout manifest ROOT`` writes the manifest after ops have
placed the files; ``... verify ROOT`` re-checks every checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import AssetMissingError

FORMAT = "facecloak-arc2face/1"
MANIFEST = "manifest.json"
# Each component: the files that must exist (any one of a tuple of alternatives).
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "unet": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    "vae": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "tokenizer": (("vocab.json",), ("merges.txt",)),
    "scheduler": (("scheduler_config.json",),),
}
ID_MODEL = "face_id/arcface.onnx"
LCM_LORA = "lcm_lora/pytorch_lora_weights.safetensors"


class ChecksumError(AssetMissingError):
    """A model file differs from the manifest (truncated copy, wrong version, tampering)."""

    reason = "ASSET_CHECKSUM"


@dataclass(frozen=True)
class Arc2FaceLayout:
    """Resolved paths of one verified model directory."""

    root: Path

    def part(self, name: str) -> Path:
        return self.root / name

    @property
    def id_model(self) -> Path:
        return self.root / ID_MODEL

    @property
    def face_id_dir(self) -> Path:
        return self.root / "face_id"

    @property
    def lcm_lora(self) -> Path | None:
        path = self.root / LCM_LORA
        return path if path.is_file() else None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def missing_parts(root: Path) -> list[str]:
    """Relative paths (or alternatives joined by '|') that the layout needs but ``root`` lacks."""
    missing = []
    for part, groups in REQUIRED.items():
        for alternatives in groups:
            if not any((root / part / name).is_file() for name in alternatives):
                missing.append("|".join(f"{part}/{name}" for name in alternatives))
    if not (root / ID_MODEL).is_file():
        missing.append(ID_MODEL)
    return missing


def _model_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))


def write_manifest(root: str | Path) -> Path:
    """Hash every file under ``root`` into root/manifest.json (ops run this once per model drop)."""
    root = Path(root)
    if missing := missing_parts(root):
        raise AssetMissingError(f"Arc2Face model directory {root} is incomplete; missing: {', '.join(missing)}")
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in _model_files(root)}
    path = root / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, "files": files}, indent=1, sort_keys=True) + "\n")
    return path


def verify_layout(root: str | Path, check_hashes: bool = True) -> Arc2FaceLayout:
    """Check that ``root`` has every part and (optionally) that every file matches its manifest sha256."""
    root = Path(root)
    if not root.is_dir():
        raise AssetMissingError(f"Arc2Face model directory not found: {root}")
    if missing := missing_parts(root):
        raise AssetMissingError(f"Arc2Face model directory {root} is incomplete; missing: {', '.join(missing)}")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise AssetMissingError(f"{manifest_path} is missing; ops write it with `python -m {__name__} manifest {root}`")
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
        fmt = manifest["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChecksumError(f"{manifest_path} is not a valid manifest: {exc}") from None
    if fmt != FORMAT:
        raise ChecksumError(f"{manifest_path} has format {fmt!r}; this version reads {FORMAT!r}")
    unlisted = [p.relative_to(root).as_posix() for p in _model_files(root) if p.relative_to(root).as_posix() not in files]
    if unlisted:
        raise ChecksumError(f"files not in {manifest_path}: {', '.join(unlisted)} (rewrite the manifest after a model drop)")
    if check_hashes:
        for rel, expected in files.items():
            path = root / rel
            if not path.is_file():
                raise AssetMissingError(f"{path} is listed in the manifest but missing")
            if sha256_file(path) != expected:
                raise ChecksumError(f"{path} does not match its manifest sha256 (corrupted or replaced file)")
    return Arc2FaceLayout(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description="Arc2Face model directory manifest")
    parser.add_argument("action", choices=["manifest", "verify"])
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if args.action == "manifest":
        print(write_manifest(args.root))
    else:
        verify_layout(args.root)
        print(f"{args.root}: all files match {MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

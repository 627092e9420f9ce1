"""ONNX export of the Arc2Face graphs (dynamic batch) with parity checks against PyTorch.

Three graphs, each what the sampling loop calls, so an engine runtime can replay it exactly:

- ``arc2face_text``: (input_ids int64 (B, L), id_embedding (B, D)) -> prompt_embeds (B, L, W); the
  id-token splice is inside the graph (same module as arc2face_conditioning).
- ``arc2face_unet``: (sample (B, 4, h, w), timestep int64 (B,), encoder_hidden_states (B, L, W)) -> noise.
- ``arc2face_vae_decoder``: latents (B, 4, h, w) -> image (B, 3, H, W) in [0, 1] (the latent scaling
  and the [-1, 1] -> [0, 1] mapping are in the graph).

``facecloak-export arc2face MODEL_DIR`` runs ``run_export`` (docs/arc2face.md);
the result records carry what a manifest artefact needs (file, sha256, shapes, parity figures).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecloak.engines.manifest import Artefact
from facecloak.views.arc2face_conditioning import SplicedTextEncoder, id_token_id, prompt_ids
from facecloak.views.arc2face_layout import sha256_file, verify_layout
from facecloak.views.arc2face_sampler import OUTPUT_NAMES, Arc2FaceModels, SamplerConfig, load_models

from .pipeline import save_artefacts

OPSET = 18  # the export stage's opset: TensorRT 10 parses it, ONNX Runtime 1.20+ runs it


@dataclass(frozen=True)
class ExportSpec:
    size: int = 512  # image side; the latent side is size / vae factor
    example_batch: int = 2  # traced batch; the graphs take any batch
    parity_batch: int = 3  # a batch different from the traced one proves the batch axis is dynamic
    opset: int = OPSET
    tolerance: float = 2e-3  # max |ORT - torch| relative to the reference's max magnitude (fp32)


@dataclass
class ExportedGraph:
    name: str
    path: Path
    sha256: str
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    parity: dict[str, float] = field(default_factory=dict)
    export_s: float = 0.0


class UNetGraph(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        image = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return (image / 2 + 0.5).clamp(0, 1)


def graph_inputs(models: Arc2FaceModels, spec: ExportSpec, batch: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Realistic example inputs per graph: the real prompt ids, unit identities, scheduler-range timesteps."""
    gen = torch.Generator().manual_seed(seed)
    text = models.text_encoder.config
    side = spec.size // 2 ** (len(models.vae.config.block_out_channels) - 1)
    channels = models.unet.config.in_channels
    identity = torch.nn.functional.normalize(torch.randn(batch, 512, generator=gen), dim=-1)
    return {
        "arc2face_text": {"input_ids": prompt_ids(models.tokenizer, "photo of a id person").expand(batch, -1).contiguous(),
                          "id_embedding": identity},
        "arc2face_unet": {"sample": torch.randn(batch, channels, side, side, generator=gen),
                          "timestep": torch.randint(0, 1000, (batch,), generator=gen),
                          "encoder_hidden_states": torch.randn(batch, text.max_position_embeddings, text.hidden_size, generator=gen)},
        "arc2face_vae_decoder": {"latents": torch.randn(batch, channels, side, side, generator=gen)},
    }


def graph_modules(models: Arc2FaceModels) -> dict[str, nn.Module]:
    return {
        "arc2face_text": SplicedTextEncoder(models.text_encoder, id_token_id(models.tokenizer)),
        "arc2face_unet": UNetGraph(models.unet),
        "arc2face_vae_decoder": VaeDecoderGraph(models.vae),
    }




def export_graph(module: nn.Module, inputs: dict[str, torch.Tensor], path: Path, output: str, opset: int = OPSET) -> None:
    """Export with a dynamic batch axis shared by every input (dynamo exporter, like the export stage)."""
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = {name: {0: batch} for name in inputs}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            module.eval(), (), kwargs=inputs, dynamo=True, opset_version=opset, dynamic_shapes=shapes,
            input_names=list(inputs), output_names=[output], verbose=False,
        )
    program.save(str(path))


def check_parity(module: nn.Module, path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Run the ONNX file in ONNX Runtime and compare with PyTorch on the same inputs."""
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        reference = module(**inputs).float().numpy()
    (got,) = session.run(None, {name: value.numpy() for name, value in inputs.items()})
    err = float(np.abs(got - reference).max())
    return {"max_abs_err": err, "rel_err": err / max(float(np.abs(reference).max()), 1e-12), "batch": len(got)}


def _shapes(path: Path) -> tuple[dict, dict]:
    import onnx  # noqa: PLC0415

    model = onnx.load(str(path), load_external_data=False)

    def dims(values) -> dict[str, list[int | str]]:  # noqa: ANN001 - repeated ValueInfoProto
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    return dims(model.graph.input), dims(model.graph.output)


def export_arc2face(models: Arc2FaceModels, out: Path, spec: ExportSpec = ExportSpec(), verify: bool = True) -> list[ExportedGraph]:
    """Export the three graphs into ``out``; with ``verify`` fail loudly if any parity exceeds the tolerance."""
    examples = graph_inputs(models, spec, spec.example_batch)
    checks = graph_inputs(models, spec, spec.parity_batch, seed=1)
    results = []
    for name, module in graph_modules(models).items():
        path = Path(out) / f"{name}.onnx"
        start = time.perf_counter()
        export_graph(module, examples[name], path, OUTPUT_NAMES[name], spec.opset)
        inputs, outputs = _shapes(path)
        graph = ExportedGraph(name, path, sha256_file(path), inputs, outputs, export_s=time.perf_counter() - start)
        if verify:
            graph.parity = check_parity(module, path, checks[name])
            if graph.parity["rel_err"] > spec.tolerance:
                raise RuntimeError(f"{name}: ONNX Runtime differs from PyTorch (relative error {graph.parity['rel_err']:.2e})")
        results.append(graph)
    return results


# Which model-directory parts each graph is built from (their sha256 go into the artefact).
SOURCES = {"arc2face_text": ("text_encoder", "tokenizer"), "arc2face_unet": ("unet",), "arc2face_vae_decoder": ("vae",)}


def to_artefacts(graphs: list[ExportedGraph], out: Path, model_dir: Path, spec: ExportSpec) -> list:
    """Manifest entries (kind "arc2face") for the export stage's manifest.json in ``out``."""

    weights = json.loads((Path(model_dir) / "manifest.json").read_text())["files"]
    return [
        Artefact(
            name=g.name, kind="arc2face", file=g.path.relative_to(out).as_posix(), sha256=g.sha256, opset=spec.opset,
            inputs=g.inputs, outputs=g.outputs, verification=g.parity, seconds=round(g.export_s, 1),
            attributes={"size": spec.size, "weights": {rel: digest for rel, digest in weights.items()
                                                       if rel.split("/")[0] in SOURCES[g.name]}},
        )
        for g in graphs
    ]


def run_export(args: argparse.Namespace) -> int:
    layout = verify_layout(args.model_dir)
    # Export in fp32 on CPU: the fp16 engines are built from these graphs by TensorRT.
    models = load_models(layout, SamplerConfig(device="cpu", dtype="float32"))
    spec = ExportSpec(size=args.size)
    graphs = export_arc2face(models, args.out, spec, verify=not args.no_verify)
    for graph in graphs:
        parity = f"rel_err {graph.parity['rel_err']:.1e}" if graph.parity else "not verified"
        print(f"{graph.path}  {graph.sha256[:12]}  {graph.export_s:.1f}s  {parity}")
    save_artefacts(args.out, to_artefacts(graphs, args.out, layout.root, spec))
    print(f"recorded in {args.out / 'manifest.json'}")
    return 0

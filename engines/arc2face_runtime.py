"""Arc2Face sampling on the exported graphs (ONNX Runtime; CUDA execution provider when present).

The same seeded loop as the PyTorch sampler (``SamplingLoop``), with the text encoder, UNet and VAE
decoder replaced by the three graphs that ``facecloak-export arc2face`` recorded in an export folder's
manifest. The graphs are refused, with the reason, when the manifest lacks them, a file differs
from its recorded sha256, or the model directory's weights changed since the export. Only light
files of the model directory are read here (tokenizer, configs, noise schedule).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from facecloak.errors import BadOptionError
from facecloak.views.arc2face_conditioning import ID_PROMPT, id_token_id, prompt_ids
from facecloak.views.arc2face_layout import verify_layout
from facecloak.views.arc2face_sampler import OUTPUT_NAMES, SamplerConfig, SamplingLoop

from .manifest import EngineMismatchError, check_artefact, load_manifest


def _sessions(export_dir: Path, weights: dict[str, str]) -> dict:
    import onnxruntime as ort  # noqa: PLC0415

    manifest = load_manifest(export_dir)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    sessions = {}
    for name in OUTPUT_NAMES:
        artefact = manifest.artefacts.get(name)
        if artefact is None or artefact.kind != "arc2face":
            raise EngineMismatchError(f"{export_dir} has no {name} graph: run `facecloak-export arc2face MODEL_DIR --out {export_dir}`")
        stale = sorted(rel for rel, digest in artefact.attributes.get("weights", {}).items() if weights.get(rel) != digest)
        if stale:
            raise EngineMismatchError(f"{name} was exported from other weights ({', '.join(stale)} changed): re-export")
        sessions[name] = (ort.InferenceSession(str(check_artefact(export_dir, artefact, {})), providers=providers), artefact)
    return sessions


class OnnxArc2FaceSampler(SamplingLoop):
    """``SamplingLoop`` whose graph calls run the exported ONNX files."""

    def __init__(self, export_dir: str | Path, model_dir: str | Path, config: SamplerConfig) -> None:
        from transformers import CLIPTokenizer  # noqa: PLC0415 - tokenizer only, no model weights

        if config.lcm:
            raise BadOptionError("LCM mode runs on the PyTorch sampler; the exported UNet has no LoRA fused in")
        layout = verify_layout(model_dir, check_hashes=False)
        weights = json.loads((layout.root / "manifest.json").read_text())["files"]
        self.sessions = _sessions(Path(export_dir), weights)
        read = lambda part, file: json.loads((layout.part(part) / file).read_text())  # noqa: E731
        unet, vae = read("unet", "config.json"), read("vae", "config.json")
        super().__init__(config, read("scheduler", "scheduler_config.json"), False, len(vae["block_out_channels"]),
                         unet["in_channels"], torch.device("cpu"), torch.float32)
        side = self.sessions["arc2face_unet"][1].inputs["sample"][-1]
        if side * self.vae_factor != config.size:
            raise BadOptionError(f"the exported UNet works at {side * self.vae_factor} px; asked for {config.size} px")
        tokenizer = CLIPTokenizer.from_pretrained(layout.part("tokenizer"), local_files_only=True)
        self.ids, self.empty_ids = prompt_ids(tokenizer, ID_PROMPT), prompt_ids(tokenizer, "")
        if int((self.ids == id_token_id(tokenizer)).sum()) != 1:
            raise BadOptionError(f"the prompt {ID_PROMPT!r} must contain the id token exactly once")
        self.id_dim = self.sessions["arc2face_text"][1].inputs["id_embedding"][-1]

    def _run(self, name: str, **inputs: torch.Tensor) -> torch.Tensor:
        session = self.sessions[name][0]
        (out,) = session.run(None, {key: value.cpu().numpy() for key, value in inputs.items()})
        return torch.from_numpy(out)

    def positive(self, id_embeddings: torch.Tensor) -> torch.Tensor:
        ids = self.ids.expand(len(id_embeddings), -1).contiguous()
        return self._run("arc2face_text", input_ids=ids, id_embedding=id_embeddings.float())

    def negative(self, batch: int) -> torch.Tensor:
        # The empty prompt has no id token, so the identity input does not reach the output.
        ids = self.empty_ids.expand(batch, -1).contiguous()
        return self._run("arc2face_text", input_ids=ids, id_embedding=torch.zeros(batch, self.id_dim))

    def predict_noise(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        steps = timestep.reshape(-1).expand(len(sample)).to(torch.int64)
        return self._run("arc2face_unet", sample=sample.float(), timestep=steps, encoder_hidden_states=context.float())

    def vae_images(self, latents: torch.Tensor) -> torch.Tensor:
        return self._run("arc2face_vae_decoder", latents=latents.float())


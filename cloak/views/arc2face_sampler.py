"""Loading the Arc2Face diffusers components from a local directory, and the seeded sampling loop.

Classifier-free guidance with DPM-Solver++ (multistep, 25 steps, guidance 3.0, 512 px) as in the
Arc2Face release; with a local LCM-LoRA the UNet gets the LoRA fused in and an LCM scheduler runs
a few steps without guidance. Every image has its own torch generator seeded from (request seed,
candidate index), so a view is reproducible whatever batch it lands in. Everything runs under
``torch.no_grad`` (the public code ran generation with autograd on and needed ~144 GB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import BadOptionError
from .arc2face_conditioning import IdPromptEncoder
from .arc2face_layout import Arc2FaceLayout

# Output name of each exported Arc2Face graph (the exporter writes them, the engine sampler reads them).
OUTPUT_NAMES = {"arc2face_text": "prompt_embeds", "arc2face_unet": "noise_pred", "arc2face_vae_decoder": "image"}


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 25
    guidance: float = 3.0
    size: int = 512
    batch_size: int = 4  # images per UNet call (doubled by guidance)
    device: str = "auto"  # "auto": cuda if available, else cpu
    dtype: str = "auto"  # "auto": float16 on cuda, float32 on cpu
    lcm: bool = False  # few-step mode; needs lcm_lora/ in the model directory (or lcm_lora_path)
    lcm_lora_path: Path | None = None
    lcm_steps: int = 4
    lcm_guidance: float = 1.0  # LCM-LoRA distils guidance away: 1.0 = conditional branch only

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if self.resolved_device().type == "cuda" else torch.float32
        try:
            return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[self.dtype]
        except KeyError:
            raise BadOptionError(f"unknown dtype {self.dtype!r}; use float16, bfloat16, float32 or auto") from None


@dataclass
class Arc2FaceModels:
    """The diffusers/transformers components, on one device, in eval mode."""

    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    lcm: bool


def _load_lcm_lora(unet: torch.nn.Module, path: Path) -> None:
    """Fuse an LCM-LoRA (diffusers or kohya key format) into the UNet weights."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as Lora  # noqa: PLC0415

    if not path.is_file():
        raise BadOptionError(f"LCM mode needs a LoRA file; {path} does not exist")
    state, alphas = Lora.lora_state_dict(str(path))
    Lora.load_lora_into_unet(state, alphas, unet, adapter_name="lcm")
    unet.fuse_lora(lora_scale=1.0, adapter_names=["lcm"])


def load_models(layout: Arc2FaceLayout, config: SamplerConfig) -> Arc2FaceModels:
    """Load every component from ``layout`` only (local_files_only: a missing file never turns into a download)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: PLC0415 - optional extra
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: PLC0415

    device, dtype = config.resolved_device(), config.resolved_dtype()
    tokenizer = CLIPTokenizer.from_pretrained(layout.part("tokenizer"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(layout.part("text_encoder"), local_files_only=True, dtype=dtype)
    unet = UNet2DConditionModel.from_pretrained(layout.part("unet"), local_files_only=True, torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(layout.part("vae"), local_files_only=True, torch_dtype=dtype)
    if config.lcm:
        lora = config.lcm_lora_path or layout.lcm_lora
        if lora is None:
            raise BadOptionError(f"LCM mode needs {layout.root}/lcm_lora/pytorch_lora_weights.safetensors or lcm_lora_path")
        _load_lcm_lora(unet, Path(lora))
    for module in (text_encoder, unet, vae):
        module.to(device).eval().requires_grad_(False)
    schedule = json.loads(layout.part("scheduler").joinpath("scheduler_config.json").read_text())
    return Arc2FaceModels(tokenizer, text_encoder, unet, vae, schedule, config.lcm)


class SamplingLoop:
    """The seeded guidance + scheduler loop over three graph calls that subclasses provide.

    ``Arc2FaceSampler`` runs the PyTorch modules; ``arc2face_runtime.OnnxArc2FaceSampler`` runs the
    exported graphs. Identity embedding + per-image seeds -> RGB uint8 images (B, size, size, 3).
    """

    def __init__(self, config: SamplerConfig, scheduler_config: dict, lcm: bool, vae_blocks: int, latent_channels: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.config = config
        self.scheduler_config = scheduler_config
        self.lcm = lcm
        self.vae_factor = 2 ** (vae_blocks - 1)
        if config.size % (self.vae_factor * 8):
            raise BadOptionError(f"image size {config.size} must be a multiple of {self.vae_factor * 8}")
        self.latent_channels = latent_channels
        self.device, self.dtype = device, dtype
        self.steps = config.lcm_steps if lcm else config.steps
        self.guidance = config.lcm_guidance if lcm else config.guidance

    # The three graph calls: text encoder (with the id splice), UNet, VAE decoder.
    def positive(self, id_embeddings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def negative(self, batch: int) -> torch.Tensor:
        raise NotImplementedError

    def predict_noise(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def vae_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> float images (B, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def _scheduler(self):
        from diffusers import DPMSolverMultistepScheduler, LCMScheduler  # noqa: PLC0415

        cls = LCMScheduler if self.lcm else DPMSolverMultistepScheduler
        scheduler = cls.from_config(self.scheduler_config)
        scheduler.set_timesteps(self.steps, device=self.device)
        return scheduler

    def initial_latents(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """One CPU generator per image (device-independent noise), latents on the sampler's device."""
        side = self.config.size // self.vae_factor
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        noise = torch.stack([torch.randn((self.latent_channels, side, side), generator=g) for g in generators])
        return noise.to(self.device, self.dtype), generators

    @torch.no_grad()
    def denoise(self, cond: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Prompt embeddings (B, L, W) + seeds -> final latents (B, C, h, w)."""
        scheduler = self._scheduler()
        latents, generators = self.initial_latents(seeds)
        latents = latents * scheduler.init_noise_sigma
        guided = self.guidance > 1.0
        context = torch.cat([self.negative(len(seeds)).to(cond.dtype), cond]) if guided else cond
        for t in scheduler.timesteps:
            model_in = torch.cat([latents, latents]) if guided else latents
            noise = self.predict_noise(scheduler.scale_model_input(model_in, t), t, context)
            if guided:
                uncond, text = noise.chunk(2)
                noise = uncond + self.guidance * (text - uncond)
            # The per-image generators keep LCM's re-noising seeded per view too.
            latents = scheduler.step(noise, t, latents, generator=generators).prev_sample
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        images = self.vae_images(latents).float()
        return (images.permute(0, 2, 3, 1).cpu().numpy() * 255.0).round().astype(np.uint8)

    def sample(self, id_embedding: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """Generate one image per seed for the identity ``id_embedding`` (D,)."""
        cond = self.positive(torch.from_numpy(np.asarray(id_embedding, np.float32))[None])
        out = []
        for start in range(0, len(seeds), self.config.batch_size):
            chunk = list(seeds[start : start + self.config.batch_size])
            out.append(self.decode(self.denoise(cond.expand(len(chunk), -1, -1), chunk)))
        return np.concatenate(out) if out else np.zeros((0, self.config.size, self.config.size, 3), np.uint8)


class Arc2FaceSampler(SamplingLoop):
    """The loop on the PyTorch modules (diffusers UNet/VAE, transformers CLIP)."""

    def __init__(self, models: Arc2FaceModels, config: SamplerConfig) -> None:
        unet = models.unet
        super().__init__(config, models.scheduler_config, models.lcm, len(models.vae.config.block_out_channels),
                         unet.config.in_channels, unet.device, unet.dtype)
        self.models = models
        self.prompts = IdPromptEncoder(models.text_encoder, models.tokenizer)

    def positive(self, id_embeddings: torch.Tensor) -> torch.Tensor:
        return self.prompts.positive(id_embeddings)

    def negative(self, batch: int) -> torch.Tensor:
        return self.prompts.negative(batch)

    def predict_noise(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.models.unet(sample, timestep, encoder_hidden_states=context.to(self.dtype)).sample

    def vae_images(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.models.vae
        return (vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

"""A tiny, randomly initialised Arc2Face model directory built from configs (tests and benchmarks).

Same layout, file formats and code path as the real release (see arc2face_layout), a few MB in
size and no downloads: a CLIP BPE tokenizer over the prompt's words, a one-layer CLIP text encoder
whose token width (576) exceeds the 512-d identity so the zero padding is exercised, a two-level
UNet with cross-attention, a two-level VAE (2x downsampling) and the SD-1.5 noise schedule.
It generates noise, not faces: it tests plumbing, determinism and export, never image quality.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from facecloak.views.arc2face_conditioning import ID_PROMPT
from facecloak.views.arc2face_layout import ID_MODEL, write_manifest

# SD-1.5's scheduler_config.json (the schedule Arc2Face was trained with); the class name is
# what the SD-1.5 folder ships, the loader builds DPM-Solver++ from it.
SD15_SCHEDULE = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class TinyConfig:
    width: int = 576  # token width; > 512 so the identity gets zero-padded as in the real 768
    max_length: int = 16  # the real tokenizer uses 77
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 64)
    seed: int = 0


def _write_tokenizer(folder: Path, max_length: int) -> None:
    """A CLIP BPE vocabulary that spells the Arc2Face prompt (letters + merges building each word)."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    merges: list[str] = []
    for word in dict.fromkeys(ID_PROMPT.split()):
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps(special))


def build_tiny_model_dir(root: str | Path, id_model: Path, config: TinyConfig = TinyConfig()) -> Path:
    """Write a complete tiny model directory at ``root`` (identity model linked from ``id_model``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: PLC0415 - optional extra
    from transformers import CLIPTextConfig, CLIPTextModel  # noqa: PLC0415

    root = Path(root)
    torch.manual_seed(config.seed)
    _write_tokenizer(root / "tokenizer", config.max_length)
    vocab_size = len(json.loads((root / "tokenizer" / "vocab.json").read_text()))
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=config.width, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=4, max_position_embeddings=config.max_length, projection_dim=32,
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
        )
    )
    text.save_pretrained(root / "text_encoder")
    blocks = len(config.unet_channels)
    UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (blocks - 1),
        up_block_types=("UpBlock2D",) * (blocks - 1) + ("CrossAttnUpBlock2D",),
        cross_attention_dim=config.width, attention_head_dim=8, norm_num_groups=16,
    ).save_pretrained(root / "unet")
    vae_blocks = len(config.vae_channels)
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=config.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks, up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        norm_num_groups=16, sample_size=64,
    ).save_pretrained(root / "vae")
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULE, indent=1))
    (root / ID_MODEL).parent.mkdir(parents=True, exist_ok=True)
    (root / ID_MODEL).symlink_to(Path(id_model).resolve())
    write_manifest(root)
    return root

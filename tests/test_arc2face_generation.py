"""The whole generation path on a tiny random Arc2Face built from configs and loaded through our loader."""

from pathlib import Path

import numpy as np
import pytest
import torch

from facecloak.assets import asset
from facecloak.errors import BadOptionError
from facecloak.faces import AlignedFrame, detect_largest_face
from facecloak.views import ViewRequest
from facecloak.views.arc2face import Arc2FaceConfig, Arc2FaceViews
from facecloak.views.arc2face_layout import verify_layout
from facecloak.views.arc2face_sampler import Arc2FaceSampler, SamplerConfig, load_models
from facecloak.views.arc2face_screen import ViewGenerationError
from .arc2face_tiny import build_tiny_model_dir

TINY = SamplerConfig(size=32, steps=2, batch_size=3, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("a2f"), asset("models/facenet_casia_160.onnx"))


@pytest.fixture(scope="module")
def sampler(tiny):
    return Arc2FaceSampler(load_models(verify_layout(tiny), TINY), TINY)


@pytest.fixture(scope="module")
def identity():
    return np.random.default_rng(0).normal(size=512).astype(np.float32)


def test_defaults_are_the_arc2face_settings():
    cfg = SamplerConfig()
    assert (cfg.steps, cfg.guidance, cfg.size) == (25, 3.0, 512)
    assert SamplerConfig(device="cuda").resolved_dtype() == torch.float16
    assert SamplerConfig(device="cpu").resolved_dtype() == torch.float32
    with pytest.raises(BadOptionError, match="unknown dtype"):
        SamplerConfig(dtype="int8").resolved_dtype()


def test_loader_builds_dpm_solver_and_freezes_weights(sampler):
    scheduler = sampler._scheduler()
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler" and len(scheduler.timesteps) == 2
    assert not any(p.requires_grad for p in sampler.models.unet.parameters())
    assert sampler.models.text_encoder.config.hidden_size == 576


def test_generation_is_seeded_per_image(sampler, identity):
    a = sampler.sample(identity, [11, 12, 13])
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8 and a.std() > 5
    again = sampler.sample(identity, [13, 11])  # other batch composition, same seeds
    assert np.abs(again[0].astype(int) - a[2]).max() <= 1 and np.abs(again[1].astype(int) - a[0]).max() <= 1
    assert np.abs(a[0].astype(int) - a[1]).mean() > 5  # different seeds, different images


def test_identity_conditions_the_images(sampler, identity):
    other = np.random.default_rng(1).normal(size=512).astype(np.float32)
    a, b = sampler.sample(identity, [7]), sampler.sample(other, [7])
    assert np.abs(a.astype(int) - b).mean() > 0.5


def test_generation_runs_without_autograd(sampler, identity):
    seen = []
    hook = sampler.models.unet.register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled()))
    try:
        sampler.sample(identity, [1])
    finally:
        hook.remove()
    assert seen and not any(seen)


def test_noise_views_end_in_a_clear_error(tiny, selfie, detector):
    """The tiny model paints noise: the real screen finds no face and the request fails loudly."""
    gen = Arc2FaceViews(Arc2FaceConfig(tiny, sampler=TINY), detector)
    request = ViewRequest(selfie, detect_largest_face(detector, selfie), AlignedFrame(), 1, 3)
    with pytest.raises(ViewGenerationError, match="only 0 of 1 synthetic views passed after 3 candidates"):
        gen.generate(request)


@pytest.fixture(scope="module")
def lora(tiny, tmp_path_factory):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora")
    StableDiffusionLoraLoaderMixin.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet))
    return out / "pytorch_lora_weights.safetensors"


def test_lcm_lora_is_fused_and_runs_few_steps(tiny, sampler, lora, identity):
    from safetensors.torch import load_file

    cfg = SamplerConfig(size=32, device="cpu", lcm=True, lcm_lora_path=lora)
    lcm = Arc2FaceSampler(load_models(verify_layout(tiny), cfg), cfg)
    assert (lcm.steps, lcm.guidance, type(lcm._scheduler()).__name__) == (4, 1.0, "LCMScheduler")
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    weights = load_file(lora)
    delta = weights[f"unet.{name}.lora_B.weight"] @ weights[f"unet.{name}.lora_A.weight"]
    fused = dict(lcm.models.unet.named_parameters())[f"{name}.base_layer.weight"]
    base = dict(sampler.models.unet.named_parameters())[f"{name}.weight"]
    assert torch.allclose(fused - base, delta, atol=1e-5)
    a = lcm.sample(identity, [5])
    assert np.array_equal(a, lcm.sample(identity, [5]))
    with pytest.raises(BadOptionError, match="LCM mode needs"):
        load_models(verify_layout(tiny), SamplerConfig(size=32, device="cpu", lcm=True))
    with pytest.raises(BadOptionError, match="does not exist"):
        load_models(verify_layout(tiny), SamplerConfig(device="cpu", lcm=True, lcm_lora_path=Path("/nonexistent.safetensors")))


def test_half_precision_path_matches_float32(tiny, sampler, identity):
    """The GPU dtype (float16) through the same loader and loop; torch runs half on CPU too."""
    cfg = SamplerConfig(size=32, steps=2, device="cpu", dtype="float16")
    half = Arc2FaceSampler(load_models(verify_layout(tiny), cfg), cfg)
    assert {half.models.unet.dtype, half.models.text_encoder.dtype, half.models.vae.dtype} == {torch.float16}
    a, b = half.sample(identity, [9]), sampler.sample(identity, [9])
    assert np.abs(a.astype(int) - b).mean() < 1.0 and np.abs(a.astype(int) - b).max() <= 4

"""The id-token splice on a tiny random CLIP text encoder loaded through the real loader."""

import pytest
import torch
import torch.nn.functional as F

from facecloak.assets import asset
from facecloak.errors import BadOptionError
from facecloak.views.arc2face_conditioning import ID_PROMPT, IdPromptEncoder, prompt_ids
from facecloak.views.arc2face_layout import verify_layout
from facecloak.views.arc2face_sampler import SamplerConfig, load_models
from .arc2face_tiny import build_tiny_model_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = build_tiny_model_dir(tmp_path_factory.mktemp("a2f"), asset("models/facenet_casia_160.onnx"))
    return load_models(verify_layout(root), SamplerConfig(device="cpu"))


@pytest.fixture(scope="module")
def prompts(models):
    return IdPromptEncoder(models.text_encoder, models.tokenizer)


def _identities(n, seed=0):
    return torch.randn(n, 512, generator=torch.Generator().manual_seed(seed))


def test_prompt_has_one_id_token(models, prompts):
    tokens = models.tokenizer.convert_ids_to_tokens(prompts.ids[0])
    assert tokens[:6] == ["<|startoftext|>", "photo</w>", "of</w>", "a</w>", "id</w>", "person</w>"]
    assert int((prompts.ids == prompts.spliced.token_id).sum()) == 1


def test_splice_equals_replacing_the_id_token_embedding(models, prompts):
    """The identity, normalised and zero-padded to the width, is exactly what the encoder sees at "id"."""
    identity = _identities(1)
    spliced = prompts.positive(identity)
    table = models.text_encoder.get_input_embeddings()
    saved = table.weight.data[prompts.spliced.token_id].clone()
    try:
        padded = torch.zeros(table.weight.shape[1])
        padded[:512] = F.normalize(identity, dim=-1)[0]
        table.weight.data[prompts.spliced.token_id] = padded
        with torch.no_grad():
            manual = models.text_encoder(input_ids=prompts.ids).last_hidden_state
    finally:
        table.weight.data[prompts.spliced.token_id] = saved
    assert torch.allclose(spliced, manual, atol=1e-6)
    plain = models.text_encoder(input_ids=prompts.ids).last_hidden_state
    assert not torch.allclose(spliced, plain, atol=1e-3)  # the id token's own embedding is really gone


def test_identity_changes_the_output_only_from_the_id_position(prompts):
    a, b = prompts.positive(_identities(2)).split(1)
    pos = int((prompts.ids[0] == prompts.spliced.token_id).nonzero())
    # Causal attention: tokens before "id" cannot see it, so only positions >= pos may change.
    assert torch.equal(a[0, :pos], b[0, :pos])
    assert (a[0, pos:] - b[0, pos:]).abs().amax(dim=-1).min() > 1e-4


def test_identity_is_l2_normalised_and_batched(prompts):
    ids = _identities(3, seed=1)
    batch = prompts.positive(ids)
    assert batch.shape == (3, prompts.ids.shape[1], 576)
    assert torch.allclose(batch[1:2], prompts.positive(ids[1:2] * 7.5), atol=1e-5)  # scale does not matter


def test_negative_is_the_empty_prompt(models, prompts):
    neg = prompts.negative(2)
    empty = models.text_encoder(input_ids=prompt_ids(models.tokenizer, "")).last_hidden_state
    assert neg.shape[0] == 2 and torch.equal(neg[0], empty[0]) and torch.equal(neg[1], empty[0])
    assert prompts.ids.shape == prompt_ids(models.tokenizer, ID_PROMPT).shape


def test_oversized_identity_is_a_clear_error(prompts):
    with pytest.raises(BadOptionError, match="token width is 576"):
        prompts.positive(torch.ones(1, 1024))


def test_concurrent_requests_keep_their_own_identity(prompts):
    import time
    from concurrent.futures import ThreadPoolExecutor

    ids = _identities(4, seed=3)
    serial = [prompts.positive(ids[i : i + 1]) for i in range(4)]
    # Widen the window between installing the splice and running the encoder, as a busy server would.
    slow = prompts.spliced.text_encoder.register_forward_pre_hook(lambda module, args: time.sleep(0.01))
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: (i % 4, prompts.positive(ids[i % 4 : i % 4 + 1])), range(12)))
    finally:
        slow.remove()
    assert all(torch.allclose(out, serial[i], atol=1e-6) for i, out in results)

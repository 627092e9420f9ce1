"""Arc2Face conditioning: the identity vector spliced into the CLIP prompt "photo of a id person".

The L2-normalised identity embedding (512-d), zero-padded to the encoder's token width, replaces
the token embedding of "id" before the CLIP transformer runs, so the whole prompt context is
computed around the identity. The splice is a forward hook on the token-embedding table: the
encoder's own forward (positions, causal mask, final norm) runs unchanged, and the same module
exports to ONNX with the splice inside the graph.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadOptionError

ID_PROMPT = "photo of a id person"
ID_WORD = "id"


def id_token_id(tokenizer) -> int:
    """Vocabulary id of the placeholder word (a single token in CLIP's BPE)."""
    ids = tokenizer(ID_WORD, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise BadOptionError(f"the tokenizer splits {ID_WORD!r} into {len(ids)} tokens; Arc2Face needs exactly one")
    return int(ids[0])


def prompt_ids(tokenizer, text: str) -> torch.Tensor:
    """(1, L) token ids padded to the tokenizer's full length, as the encoder was trained."""
    return tokenizer(
        text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


class SplicedTextEncoder(nn.Module):
    """(input_ids (B, L), id_embedding (B, D)) -> CLIP last hidden state (B, L, W) with the id spliced in."""

    def __init__(self, text_encoder: nn.Module, token_id: int) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.token_id = token_id
        self.width = int(text_encoder.config.hidden_size)

    def padded_identity(self, id_embedding: torch.Tensor) -> torch.Tensor:
        if id_embedding.shape[-1] > self.width:
            raise BadOptionError(f"identity embedding has {id_embedding.shape[-1]} dims; the token width is {self.width}")
        unit = F.normalize(id_embedding.float(), dim=-1)
        return F.pad(unit, (0, self.width - id_embedding.shape[-1]))

    def forward(self, input_ids: torch.Tensor, id_embedding: torch.Tensor) -> torch.Tensor:
        table = self.text_encoder.get_input_embeddings()
        spliced = self.padded_identity(id_embedding).to(table.weight.dtype)[:, None, :]

        def splice(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            where = (args[0] == self.token_id)[..., None]
            return torch.where(where, spliced, output)

        handle = table.register_forward_hook(splice)
        try:
            return self.text_encoder(input_ids=input_ids).last_hidden_state
        finally:
            handle.remove()


class IdPromptEncoder:
    """Positive and negative prompt embeddings for a batch of identities (no gradients)."""

    def __init__(self, text_encoder: nn.Module, tokenizer) -> None:
        self.spliced = SplicedTextEncoder(text_encoder, id_token_id(tokenizer))
        self.ids = prompt_ids(tokenizer, ID_PROMPT)
        if int((self.ids == self.spliced.token_id).sum()) != 1:
            raise BadOptionError(f"the prompt {ID_PROMPT!r} must contain the id token exactly once")
        self.empty_ids = prompt_ids(tokenizer, "")
        # The splice hook lives on the shared embedding table while a call runs: concurrent server
        # requests would otherwise see each other's identity.
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self.spliced.text_encoder.get_input_embeddings().weight.device

    @torch.no_grad()
    def positive(self, id_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) identity vectors -> (B, L, W) prompt embeddings."""
        ids = self.ids.to(self.device).expand(id_embeddings.shape[0], -1)
        with self._lock:
            return self.spliced(ids, id_embeddings.to(self.device))

    @torch.no_grad()
    def negative(self, batch: int) -> torch.Tensor:
        """Encoder output on the empty prompt, repeated ``batch`` times (classifier-free guidance)."""
        out = self.spliced.text_encoder(input_ids=self.empty_ids.to(self.device)).last_hidden_state
        return out.expand(batch, -1, -1)

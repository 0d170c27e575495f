"""The summed token loss of a causal LM without materialising the [tokens, vocab] logits.

With a 128k vocabulary, 8192 tokens of logits take 2 GB in bf16, twice that as fp32 for the
loss and again for its gradient: more than a 4-bit 8B model. Here the decoder's last hidden
states go through the output head a chunk of tokens at a time, each chunk's logits recomputed in
the backward pass instead of kept, so at most one chunk of logits exists at once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.checkpoint import checkpoint

from ..data.loss import sum_token_loss
from ..data.pack import IGNORE_INDEX


def _unwrap(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_chunked_loss(model: Any) -> bool:
    """Plain decoder + output head models; logit scaling other than a final softcap is not modelled."""
    base = _unwrap(model)
    config = base.config
    return (hasattr(base, "get_decoder") and base.get_output_embeddings() is not None
            and getattr(config, "logit_scale", None) is None and getattr(config, "logits_scaling", None) is None)


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, softcap: float | None) -> Any:
    logits = head(hidden).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


class TokenLoss(torch.nn.Module):
    """``forward(labels=..., **inputs)`` → the sum of next-token losses over trained positions, as
    :func:`sftpack.data.sum_token_loss` computes it from full logits. Wrap this module, not the
    model, in DDP so that gradient synchronisation sees the whole computation."""

    def __init__(self, model: Any, chunk_tokens: int = 2048) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.chunked = chunk_tokens > 0 and supports_chunked_loss(model)

    def forward(self, labels: torch.Tensor, **inputs: Any) -> Any:
        if not self.chunked:
            return sum_token_loss(self.model(**inputs).logits, labels)
        base = _unwrap(self.model)
        hidden = base.get_decoder()(**inputs).last_hidden_state
        hidden = hidden[..., :-1, :].reshape(-1, hidden.shape[-1])
        targets = labels[..., 1:].reshape(-1)
        head = base.get_output_embeddings()
        softcap = getattr(base.config, "final_logit_softcapping", None)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, targets.numel(), self.chunk_tokens):
            piece = slice(start, start + self.chunk_tokens)
            total = total + checkpoint(_chunk_loss, head, hidden[piece], targets[piece], softcap, use_reentrant=False)
        return total

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
from .kernels import fused_linear_cross_entropy


def _unwrap(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_chunked_loss(model: Any) -> bool:
    """Plain decoder + output head models; logit scaling other than a final softcap is not modelled."""
    base = _unwrap(model)
    config = base.config
    return (hasattr(base, "get_decoder") and base.get_output_embeddings() is not None
            and getattr(config, "logit_scale", None) is None and getattr(config, "logits_scaling", None) is None)


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, softcap: float | None,
                reduction: str = "sum") -> Any:
    logits = head(hidden).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction=reduction)


def loss_by_pack(token_losses: torch.Tensor, targets: torch.Tensor, pack_ids: torch.Tensor, packs: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and trained-token count per pack, from per-token losses (detached: for
    logging only). ``targets`` and ``pack_ids`` are shifted like the losses."""
    trained = (targets != IGNORE_INDEX) & (pack_ids >= 0)
    index = pack_ids.clamp(min=0)
    sums = torch.zeros(packs, dtype=torch.float32, device=token_losses.device)
    sums.index_add_(0, index[trained], token_losses.detach().float()[trained])
    counts = torch.zeros(packs, dtype=torch.int64, device=token_losses.device)
    counts.index_add_(0, index[trained], torch.ones_like(index[trained]))
    return sums, counts


class TokenLoss(torch.nn.Module):
    """``forward(labels=..., **inputs)`` → the sum of next-token losses over trained positions, as
    :func:`sftpack.data.sum_token_loss` computes it from full logits. Wrap this module, not the
    model, in DDP so that gradient synchronisation sees the whole computation."""

    def __init__(self, model: Any, chunk_tokens: int = 2048, packs: int = 0, kernels: str = "none") -> None:
        """``kernels="liger"``: the loss by Liger's fused linear cross-entropy (train/kernels.py),
        except where per-pack losses are kept (they need each token's loss)."""
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.fused = kernels == "liger" and supports_chunked_loss(model)
        self.chunked = (chunk_tokens > 0 or self.fused) and supports_chunked_loss(model)
        self.packs = packs
        # The last forward's (loss sum, trained tokens) per pack, when given pack_ids.
        self.by_pack: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, labels: torch.Tensor | None = None, pack_ids: torch.Tensor | None = None,
                shifted_labels: torch.Tensor | None = None, **inputs: Any) -> Any:
        """``pack_ids`` (a mixture's batches): also keep the loss per pack in ``by_pack``.
        ``shifted_labels`` instead of ``labels``: each position's target already (a sequence-
        parallel rank's share of a batch, shifted before it was cut)."""
        by_pack = pack_ids is not None and self.packs > 0
        shift = 1 if shifted_labels is None else 0
        if shifted_labels is None:
            assert labels is not None
            targets = labels[..., 1:].reshape(-1)
        else:
            targets = shifted_labels.reshape(-1)
        if not self.chunked:
            logits = self.model(**inputs).logits
            if not by_pack and labels is not None:
                return sum_token_loss(logits, labels)
            end = logits.shape[-2] - shift
            token_losses = F.cross_entropy(logits[..., :end, :].reshape(-1, logits.shape[-1]).float(), targets,
                                           ignore_index=IGNORE_INDEX, reduction="none")
            if not by_pack:
                return token_losses.sum()
        else:
            base = _unwrap(self.model)
            hidden = base.get_decoder()(**inputs).last_hidden_state
            hidden = hidden[..., :hidden.shape[-2] - shift, :].reshape(-1, hidden.shape[-1])
            head = base.get_output_embeddings()
            softcap = getattr(base.config, "final_logit_softcapping", None)
            if self.fused and not by_pack:
                return fused_linear_cross_entropy(head, hidden, targets, softcap)
            reduction = "none" if by_pack else "sum"
            pieces = [checkpoint(_chunk_loss, head, hidden[start:start + self.chunk_tokens],
                                 targets[start:start + self.chunk_tokens], softcap, reduction, use_reentrant=False)
                      for start in range(0, targets.numel(), self.chunk_tokens)]
            if not by_pack:
                total = hidden.new_zeros((), dtype=torch.float32)
                for piece in pieces:
                    total = total + piece
                return total
            token_losses = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
        assert pack_ids is not None
        self.by_pack = loss_by_pack(token_losses, targets, pack_ids[..., shift:].reshape(-1), self.packs)
        return token_losses.sum()

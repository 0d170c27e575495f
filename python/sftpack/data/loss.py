"""Loss normalized by the global count of trained tokens.

Averaging a per-micro-batch mean over gradient-accumulation steps and ranks weighs tokens
differently depending on how rows were packed and split. Instead, sum the token losses and
divide by the number of trained tokens in the whole global batch::

    n = global_trained_tokens(micro_batches)         # all ranks, all accumulation steps
    for mb in micro_batches:
        loss = sum_token_loss(model(**inputs).logits, mb["labels"]) * world_size / n
        loss.backward()                                # DDP averages over ranks: * world_size undoes it
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .pack import IGNORE_INDEX


def count_trained_tokens(labels: Any) -> int:
    """Tokens that contribute to the loss: labels after the causal shift that are not -100."""
    shifted = labels[..., 1:]
    if isinstance(shifted, np.ndarray):
        return int((shifted != IGNORE_INDEX).sum())
    return int((shifted != IGNORE_INDEX).sum().item())


def global_trained_tokens(batches: Iterable[dict[str, Any]], group: Any = None) -> int:
    """Trained tokens in these micro-batches, summed over all ranks when torch.distributed is
    initialized."""
    local = sum(count_trained_tokens(b["labels"]) for b in batches)
    try:
        import torch  # noqa: PLC0415
        import torch.distributed as dist  # noqa: PLC0415
    except ImportError:
        return local
    if dist.is_available() and dist.is_initialized():
        total = torch.tensor([local], dtype=torch.int64)
        dist.all_reduce(total, group=group)
        return int(total.item())
    return local


def sum_token_loss(logits: Any, labels: Any) -> Any:
    """Sum of next-token cross-entropy over trained positions (torch)."""
    import torch.nn.functional as F  # noqa: PLC0415, N812

    vocab = logits.shape[-1]
    return F.cross_entropy(
        logits[..., :-1, :].reshape(-1, vocab).float(),
        labels[..., 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )

"""Batches of packed rows, in the two shapes attention kernels want.

Padding-free (varlen flash attention): the batch's rows are flattened into one row and the
document boundaries travel as ``cu_seq_lens_q/k`` with ``max_length_q/k``, the keywords
transformers' flash-attention path reads, plus ``position_ids`` restarting at every document
(from which transformers builds the document mask for SDPA, eager and FlexAttention) and
``use_cache=False``::

    rows  [a a a | b b]  [c c c c]    ->  input_ids [[a a a b b c c c c]]
                                          cu_seq_lens_q [0 3 5 9], max_length_q 4

Padded ([B, L]): rows padded to the longest, with a block-diagonal causal mask [B, 1, L, L]
(True = may attend) so that documents packed into one row do not see each other under SDPA or
eager attention. ``document_mask=False`` gives the plain 2-D padding mask instead: cheaper, and
right only when every row holds one document (``--no-pack``).

Rows of a :class:`~sftpack.data.mixture.PackMixture` say which pack they came from; their batches
also hold ``pack_ids``, the pack of every token (-1 on padding), shaped like ``labels``: pop it
before calling the model, and use it to split the loss by pack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .pack import IGNORE_INDEX

Row = dict[str, Any]


def _tensors(batch: dict[str, Any], return_tensors: str | None) -> dict[str, Any]:
    if return_tensors == "np":
        return batch
    try:
        import torch  # noqa: PLC0415 (optional)
    except ImportError:
        if return_tensors == "pt":
            raise
        return batch
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def collate_padding_free(rows: Sequence[Row], return_tensors: str | None = None) -> dict[str, Any]:
    """One flattened row with varlen keywords; torch tensors when torch is installed (or
    ``return_tensors="np"``)."""
    lengths = np.concatenate([np.diff(r["cu_seqlens"]) for r in rows]).astype(np.int32)
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    longest = int(lengths.max()) if len(lengths) else 0
    batch: dict[str, Any] = {
        "input_ids": np.concatenate([r["input_ids"] for r in rows]).astype(np.int64)[None, :],
        "labels": np.concatenate([r["labels"] for r in rows])[None, :],
        "position_ids": np.concatenate([r["position_ids"] for r in rows])[None, :],
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
        # A KV cache turns off transformers' packed-sequence detection from position_ids, and
        # SDPA/FlexAttention would then let documents see each other.
        "use_cache": False,
    }
    if "pack" in rows[0]:
        batch["pack_ids"] = np.concatenate([np.full(len(r["input_ids"]), r["pack"], dtype=np.int64)
                                            for r in rows])[None, :]
    return _tensors(batch, return_tensors)


def block_diagonal_causal_mask(cu_seqlens: Sequence[np.ndarray], length: int) -> np.ndarray:
    """[B, 1, L, L] bool: token i may attend to j iff j <= i and both are in the same document."""
    mask = np.zeros((len(cu_seqlens), 1, length, length), dtype=bool)
    for b, cu in enumerate(cu_seqlens):
        for start, end in zip(cu[:-1], cu[1:], strict=True):
            n = int(end - start)
            mask[b, 0, start:end, start:end] = np.tril(np.ones((n, n), dtype=bool))
    return mask


def collate_padded(
    rows: Sequence[Row],
    pad_token_id: int = 0,
    pad_to_multiple_of: int = 1,
    document_mask: bool = True,
    return_tensors: str | None = None,
) -> dict[str, Any]:
    """Rows padded to [B, L]: input_ids, labels (-100 on padding), position_ids, and
    attention_mask: the block-diagonal causal 4-D mask, or the 2-D padding mask with
    ``document_mask=False`` (only for rows of one document each)."""
    longest = max(len(r["input_ids"]) for r in rows)
    length = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    size = (len(rows), length)
    input_ids = np.full(size, pad_token_id, dtype=np.int64)
    labels = np.full(size, IGNORE_INDEX, dtype=np.int64)
    position_ids = np.zeros(size, dtype=np.int64)
    attention = np.zeros(size, dtype=np.int64)
    for b, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[b, :n] = row["input_ids"]
        labels[b, :n] = row["labels"]
        position_ids[b, :n] = row["position_ids"]
        attention[b, :n] = 1
    batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    if "pack" in rows[0]:
        batch["pack_ids"] = np.where(attention == 1, np.array([[r["pack"]] for r in rows], dtype=np.int64), -1)
    if document_mask:
        batch["attention_mask"] = block_diagonal_causal_mask([r["cu_seqlens"] for r in rows], length)
    else:
        batch["attention_mask"] = attention
    return _tensors(batch, return_tensors)

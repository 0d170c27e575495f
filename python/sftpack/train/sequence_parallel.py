"""Sequence parallelism (``distributed.sequence_parallel: N``): each packed batch is split along
its tokens over a group of N ranks, DeepSpeed-Ulysses style, so rows N times longer fit.

```text
ranks of a group      0            1                every rank: its quarter of the tokens,
tokens            [ d0 d0 d0 d1 | d1 d2 d2 d2 ]     all heads (norms, MLP, rotary: per token)
attention:   all-to-all ->  all tokens, heads 0..H/N  |  all tokens, heads H/N..H
             the document boundaries (cu_seqlens) of the whole batch: no token sees another
             document's, wherever the cut falls; all-to-all back -> own tokens, all heads
```

Ranks ``g*N .. g*N+N-1`` form group ``g``; the groups are the data-parallel ranks (each group
reads its own batches). The batch is padded to a multiple of N with an untrained document,
labels are shifted over the whole batch before it is cut (a rank's last token is trained on the
next rank's first), and every rank's summed loss counts once: the group's losses and gradients
add up to those of one process holding the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..data.pack import IGNORE_INDEX
from ..errors import ConfigError

ULYSSES = "sftpack_ulysses"

# The group the attention function exchanges heads in (one per process).
_active: SequenceParallel | None = None


class SequenceParallel:
    """This rank's place in its sequence-parallel group."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        if world % size:
            raise ConfigError(f"distributed.sequence_parallel={size} does not divide the {world} ranks\n"
                              f"hint: run a multiple of {size} processes (NPROC_PER_NODE)")
        self.size = size
        self.index = rank % size
        self.data_rank, self.data_world = rank // size, world // size
        self.group: Any = None
        for first in range(0, world, size):  # every rank creates every group, in the same order
            group = dist.new_group(list(range(first, first + size)))
            if first <= rank < first + size:
                self.group = group

    def check_model(self, config: Any) -> None:
        check_heads(config, self.size)

    def shard(self, batch: dict[str, Any]) -> dict[str, Any]:
        """This rank's share of a padding-free batch: its run of tokens, with labels already
        shifted (``shifted_labels``) and the whole batch's document boundaries."""
        tokens = int(batch["input_ids"].shape[1])
        padded = -(-tokens // self.size) * self.size
        pad = padded - tokens
        labels = batch["labels"]
        shifted = torch.cat([labels[:, 1:], labels.new_full((1, 1), IGNORE_INDEX)], dim=1)
        columns = {"input_ids": (batch["input_ids"], 0), "shifted_labels": (shifted, IGNORE_INDEX),
                   "position_ids": (batch["position_ids"], None)}
        if "pack_ids" in batch:
            columns["pack_ids"] = (batch["pack_ids"], -1)
        share = padded // self.size
        start = self.index * share
        out = {k: v for k, v in batch.items() if k not in ("labels", *columns)}
        for name, (tensor, fill) in columns.items():
            if pad:
                extra = (torch.arange(pad, dtype=tensor.dtype)[None, :] if fill is None
                         else tensor.new_full((1, pad), fill))
                tensor = torch.cat([tensor, extra], dim=1)
            out[name] = tensor[:, start:start + share]
        cu = torch.as_tensor(batch["cu_seq_lens_q"])
        if pad:
            cu = torch.cat([cu, cu.new_tensor([padded])])
        out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = cu
        out["max_length_q"] = out["max_length_k"] = int((cu[1:] - cu[:-1]).max())
        return out


def check_heads(config: Any, size: int) -> None:
    """A model's heads, key/value heads included, must split evenly over a group of ``size``."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    for name, count in (("attention heads", heads), ("key/value heads", kv_heads)):
        if count % size:
            raise ConfigError(f"distributed.sequence_parallel={size} does not divide the model's {count} {name}\n"
                              f"hint: use a sequence_parallel size that divides {kv_heads} (each rank attends "
                              "with a share of the heads)")


def activate(parallel: SequenceParallel | None) -> None:
    global _active
    _active = parallel


def _all_to_all(pieces: list[torch.Tensor], group: Any) -> list[torch.Tensor]:
    """Piece j to rank j of ``group``; the pieces received, by sender (all of one shape)."""
    received = [torch.empty_like(p) for p in pieces]
    if dist.get_backend(group) == dist.Backend.GLOO:  # gloo has no all-to-all: one scatter per sender
        me = dist.get_rank(group)
        for sender in range(len(pieces)):
            dist.scatter(received[sender], pieces if sender == me else None, group=group, group_src=sender)
    else:
        dist.all_to_all(received, pieces, group=group)
    return received


class _AllToAll(torch.autograd.Function):
    """All-to-all whose backward is the same exchange of the gradients (pieces of one shape)."""

    @staticmethod
    def forward(ctx: Any, group: Any, *pieces: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.group = group
        return tuple(_all_to_all([p.contiguous() for p in pieces], group))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        return (None, *_all_to_all([g.contiguous() for g in grads], ctx.group))


def _exchange(tensor: torch.Tensor, split_dim: int, join_dim: int, group: Any, size: int) -> torch.Tensor:
    """All-to-all: ``tensor`` cut into ``size`` pieces along ``split_dim`` (piece j to rank j), the
    pieces received joined along ``join_dim``. Differentiable."""
    received = _AllToAll.apply(group, *tensor.chunk(size, dim=split_dim))
    return torch.cat(received, dim=join_dim)


def _document_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu: torch.Tensor,
                        scaling: float | None, kwargs: dict[str, Any]) -> torch.Tensor:
    """Causal attention within documents over the whole batch ([1, heads, tokens, dim] in,
    [1, tokens, heads, dim] out): PyTorch's varlen kernel on CUDA, SDPA with a block-diagonal
    mask elsewhere."""
    from .attention import torch_varlen_available, varlen_attention_forward  # noqa: PLC0415

    if query.is_cuda and torch_varlen_available():
        options = {**kwargs, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                   "max_length_q": int((cu[1:] - cu[:-1]).max()), "max_length_k": int((cu[1:] - cu[:-1]).max())}
        out, _ = varlen_attention_forward(None, query, key, value, None, scaling, **options)  # type: ignore[arg-type]
        return out
    tokens = query.shape[2]
    document = torch.bucketize(torch.arange(tokens, device=query.device), cu[1:].to(query.device), right=True)
    position = torch.arange(tokens, device=query.device)
    mask = (document[:, None] == document[None, :]) & (position[None, :] <= position[:, None])
    if key.shape[1] != query.shape[1]:
        key, value = (t.repeat_interleave(query.shape[1] // t.shape[1], dim=1) for t in (key, value))
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2)


def ulysses_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                              value: torch.Tensor, attention_mask: torch.Tensor | None,
                              scaling: float | None = None, dropout: float = 0.0,
                              **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface under sequence parallelism: query/key/value
    [1, heads, own tokens, dim] -> all tokens of a share of the heads -> attention within the
    batch's documents -> own tokens of all heads [1, own tokens, heads, dim]."""
    parallel = _active
    if parallel is None or dropout:
        raise ConfigError("sequence-parallel attention runs only in training with distributed.sequence_parallel, "
                          "without attention dropout")
    group, size = parallel.group, parallel.size
    q, k, v = (_exchange(t, split_dim=1, join_dim=2, group=group, size=size) for t in (query, key, value))
    out = _document_attention(q, k, v, torch.as_tensor(kwargs["cu_seq_lens_q"]), scaling, kwargs)
    # [1, all tokens, own heads, dim] -> [1, own tokens, all heads, dim]
    return _exchange(out, split_dim=1, join_dim=2, group=group, size=size), None


def register_ulysses() -> None:
    from transformers import AttentionInterface  # noqa: PLC0415
    from transformers.masking_utils import AttentionMaskInterface  # noqa: PLC0415

    from .attention import _no_mask  # noqa: PLC0415

    AttentionInterface.register(ULYSSES, ulysses_attention_forward)
    AttentionMaskInterface.register(ULYSSES, _no_mask)

"""Attention on packed rows: which kernel, and which batch shape it needs.

=================  ======================================================  ==============
model.attention    kernel                                                  batch shape
=================  ======================================================  ==============
varlen             PyTorch's own varlen flash attention                     padding-free
                   (``torch.nn.attention.varlen``, CUDA, torch >= 2.10)
flash_attention_2  the flash-attn package's varlen kernel (CUDA)            padding-free
flash_attention_4  flash-attn-4's CuTe varlen kernel (Hopper and newer)      padding-free
flex_attention     FlexAttention with a document mask from position_ids     padding-free
sdpa / eager       block-diagonal causal mask [B, 1, L, L] (the CPU path)   padded
=================  ======================================================  ==============

``auto`` takes the first that runs here in the order flash_attention_4 (installed, on a GPU of
compute capability 9.0 or more), flash_attention_2, varlen, sdpa: the varlen kernels skip the
masked-out work entirely; FlexAttention skips it by blocks but compiles
per shape; SDPA with a dense mask does all the work and is for the CPU and for checking.
All compute the same function: a token attends to earlier tokens of its own document only.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any

import torch

from ..errors import ConfigError

VARLEN = "sftpack_varlen"
PADDING_FREE = {"varlen", "flash_attention_2", "flash_attention_4", "flex_attention", "ulysses"}
CHOICES = {"auto", "varlen", "flash_attention_2", "flash_attention_4", "flex_attention", "sdpa", "eager"}


def _on_cuda_with(module: str) -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def torch_varlen_available() -> bool:
    return _on_cuda_with("torch.nn.attention.varlen")


def _flash_distributions() -> set[str]:
    """The installed distributions that provide the ``flash_attn`` module: flash-attn (2) and
    flash-attn-4 both do, and only the distribution's name tells them apart."""
    from importlib.metadata import packages_distributions  # noqa: PLC0415

    return {name.lower().replace("_", "-") for name in packages_distributions().get("flash_attn", [])}


def _cuda_capability() -> tuple[int, int] | None:
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def flash_attn_available() -> bool:
    return _cuda_capability() is not None and "flash-attn" in _flash_distributions()


def flash_attn4_available() -> bool:
    """flash-attn-4 installed, a Hopper or newer GPU, and a transformers that can call it."""
    capability = _cuda_capability()
    if capability is None or capability < (9, 0) or "flash-attn-4" not in _flash_distributions():
        return False
    return _transformers_knows("flash_attention_4")


def _transformers_knows(implementation: str) -> bool:
    """Whether this transformers can load a model with ``attn_implementation=implementation``
    (flash_attention_4 arrived in transformers 5)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: PLC0415

    return implementation in ALL_ATTENTION_FUNCTIONS


def choose_attention(requested: str) -> str:
    """The attention implementation to use for ``model.attention`` (see the module docstring)."""
    if requested == "auto":
        if flash_attn4_available():
            return "flash_attention_4"
        if flash_attn_available():
            return "flash_attention_2"
        return "varlen" if torch_varlen_available() else "sdpa"
    if requested == "flash_attention_4" and not flash_attn4_available():
        raise ConfigError("model.attention=flash_attention_4 needs flash-attn-4, a GPU of compute capability 9.0 or "
                          "more (Hopper, Blackwell) and a transformers that knows it\n"
                          "hint: pip install flash-attn-4, or use model.attention=auto")
    if requested == "varlen" and not torch_varlen_available():
        raise ConfigError("model.attention=varlen needs a CUDA GPU and torch >= 2.10 (torch.nn.attention.varlen)\n"
                          "hint: use model.attention=auto, or sdpa on the CPU")
    if requested == "flash_attention_2" and not flash_attn_available():
        raise ConfigError("model.attention=flash_attention_2 needs a CUDA GPU and the flash-attn package\n"
                          "hint: pip install flash-attn, or use model.attention=varlen (PyTorch's own kernel)")
    return requested


def transformers_name(choice: str) -> str:
    """The ``attn_implementation`` to load the model with."""
    if choice == "varlen":
        register_varlen()
        return VARLEN
    if choice == "ulysses":
        from .sequence_parallel import ULYSSES, register_ulysses  # noqa: PLC0415

        register_ulysses()
        return ULYSSES
    return choice


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None,
                             dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface over ``torch.nn.attention.varlen.varlen_attn``.

    Takes the padding-free batch: query/key/value [1, heads, tokens, dim] and the document
    boundaries as ``cu_seq_lens_q/k`` with ``max_length_q/k`` (what the collate emits)."""
    from torch.nn.attention.varlen import varlen_attn  # noqa: PLC0415

    if dropout:
        raise ConfigError("model.attention=varlen does not support attention dropout\nhint: set the model's "
                          "attention_dropout to 0, or use model.attention=sdpa")
    cu_q = kwargs.get("cu_seq_lens_q")
    if cu_q is None or query.shape[0] != 1:
        raise ConfigError("model.attention=varlen needs padding-free batches (cu_seq_lens_q); generation and "
                          "padded batches are not supported\nhint: use sdpa to generate")
    cu_k = kwargs.get("cu_seq_lens_k", cu_q)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [tokens, heads, dim]
    if q.dtype == torch.float32:  # fp32 norms (QLoRA's prepare_model_for_kbit_training): flash wants 16-bit
        half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        q, k, v = q.to(half), k.to(half), v.to(half)
    options: dict[str, Any] = {"scale": scaling}
    accepted = _varlen_parameters()
    if "window_size" in accepted:  # torch >= 2.12 spells causal as a window
        options["window_size"] = (-1, 0)
    elif "is_causal" in accepted:
        options["is_causal"] = True
    else:
        raise ConfigError("this torch's varlen_attn has no causal option\nhint: use model.attention=flex_attention")
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in accepted:
            options["enable_gqa"] = True
        else:  # older kernels want as many key/value heads as query heads
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    out = varlen_attn(q, k, v, cu_q.to(torch.int32), cu_k.to(torch.int32), int(kwargs["max_length_q"]),
                      int(kwargs.get("max_length_k", kwargs["max_length_q"])), **options)
    assert isinstance(out, torch.Tensor)  # no aux outputs were asked for
    return out.to(query.dtype).unsqueeze(0), None  # [1, tokens, heads, dim], as transformers' flash paths return


@functools.cache
def _varlen_parameters() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn  # noqa: PLC0415

    return frozenset(inspect.signature(varlen_attn).parameters)


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def register_varlen() -> None:
    from transformers import AttentionInterface  # noqa: PLC0415
    from transformers.masking_utils import AttentionMaskInterface  # noqa: PLC0415

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, _no_mask)

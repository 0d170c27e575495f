"""Fused kernels (``model.kernels``): Liger's Triton kernels on a CUDA GPU, PyTorch's own otherwise.

=========  ===================================================================================
auto       ``liger`` where it runs (CUDA and liger-kernel installed: ``pip install
           'sftpack[kernels]'``), else ``none``
liger      RMSNorm, RoPE and SwiGLU patched into the loaded model, and the loss as Liger's fused
           linear cross-entropy (the output head and the loss in chunks, no logits kept)
none       the model's own modules, and sftpack's chunked loss (train/loss.py), which also keeps
           no [tokens, vocab] logits
=========  ===================================================================================

Both compute the same function (tests/test_gpu.py compares losses and gradients on a GPU).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import torch

from ..errors import ConfigError

CHOICES = ("auto", "liger", "none")


def liger_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        return importlib.util.find_spec("liger_kernel") is not None
    except ModuleNotFoundError:
        return False


def choose_kernels(requested: str) -> str:
    """``liger`` or ``none`` for ``model.kernels`` (see the module docstring)."""
    if requested not in CHOICES:
        raise ConfigError(f"model.kernels: {requested!r} is not one of {', '.join(CHOICES)}")
    if requested == "auto":
        return "liger" if liger_available() else "none"
    if requested == "liger" and not liger_available():
        raise ConfigError("model.kernels=liger needs a CUDA GPU and the liger-kernel package\n"
                          "hint: pip install 'sftpack[kernels]', or use model.kernels=auto (Liger where it runs)")
    return requested


def apply_kernels(model: Any, choice: str) -> None:
    """Patches Liger's RMSNorm, RoPE and SwiGLU into a loaded model (its base under an adapter).

    Liger also swaps the classes in the model family's transformers module, so that every model
    built later in the process would be fused too; those are put back, so only this model is (a
    baseline or reference built afterwards gets transformers' own modules). The RoPE function stays
    swapped: the attention layers look it up in that module as they run."""
    if choice != "liger":
        return
    from liger_kernel.transformers import _apply_liger_kernel_to_instance  # noqa: PLC0415

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    modeling = sys.modules[type(base).__module__]
    classes = {name: value for name, value in vars(modeling).items() if isinstance(value, type)}
    _apply_liger_kernel_to_instance(model=base, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
    for name, value in classes.items():
        setattr(modeling, name, value)


def fused_linear_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                               softcap: float | None) -> torch.Tensor:
    """The summed cross-entropy of ``head(hidden)`` against ``targets`` by Liger's fused kernel."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss  # noqa: PLC0415

    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="sum", softcap=softcap)
    bias = getattr(head, "bias", None)
    result: torch.Tensor = loss(head.weight, hidden, targets, bias)
    return result

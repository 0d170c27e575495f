"""Fused kernels (``model.kernels``): Liger's Triton kernels on a CUDA GPU, PyTorch's own otherwise.

=========  ===================================================================================
auto       ``liger`` where it runs (CUDA, and liger-kernel installed and importable with this
           transformers: ``pip install 'sftpack[kernels]'``), else ``none``
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


def _liger_installed() -> bool:
    try:
        return importlib.util.find_spec("liger_kernel") is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def liger_problem() -> str | None:
    """Why Liger cannot run here, or None when it can. Importing it is part of the check: a
    liger-kernel release refuses the transformers versions it was not made for (0.8 wants 5.x)."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if not _liger_installed():
        return "needs the liger-kernel package"
    return liger_import_problem()


def liger_import_problem() -> str | None:
    """Why liger-kernel's transformers patches will not import here, or None when they do."""
    try:
        import liger_kernel.transformers  # noqa: F401, PLC0415
    except Exception as error:  # noqa: BLE001 - ImportError from a version check, or Triton's own
        # errors at import (the Triton of torch 2.6 raises RuntimeError where it finds no driver)
        return f"cannot import liger-kernel here: {error}"
    return None


def liger_available() -> bool:
    return liger_problem() is None


def choose_kernels(requested: str, say_why: bool = True) -> str:
    """``liger`` or ``none`` for ``model.kernels`` (see the module docstring). ``say_why``: print
    the note when ``auto`` passes over an installed Liger (one rank of a multi-process run says it)."""
    if requested not in CHOICES:
        raise ConfigError(f"model.kernels: {requested!r} is not one of {', '.join(CHOICES)}")
    if requested == "none":
        return "none"
    problem = liger_problem()
    if problem is None:
        return "liger"
    if requested == "liger":
        raise ConfigError(f"model.kernels=liger {problem}\nhint: pip install 'sftpack[kernels]' (liger-kernel 0.8 "
                          "needs transformers >= 5), or use model.kernels=auto (Liger where it runs)")
    if say_why and torch.cuda.is_available() and _liger_installed():  # installed, not for this transformers
        print(f"note: model.kernels=auto: Liger {problem}; training with sftpack's own kernels", flush=True)
    return "none"


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

"""Training backends: how a recipe's model is wrapped, stepped, saved and restored.

=============  ==================================================================================
plain          torch: DistributedDataParallel on several ranks, AdamW, autocast and (fp16) loss
               scaling; checkpoint-N is a Hugging Face folder plus trainer_state.pt
deepspeed      DeepSpeed ZeRO (distributed.deepspeed): the engine owns precision, sharded
               optimizer state and accumulation; checkpoint-N is DeepSpeed's sharded format
=============  ==================================================================================

The recipe speaks to either through :class:`Backend` only, and owns everything else: data,
losses over ranks, evaluation, logging and the training record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch


class Backend(Protocol):
    """What a training backend does for the recipe."""

    # "huggingface" or "deepspeed": how checkpoint-N folders are laid out (the training record says)
    checkpoint_format: str

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The summed token loss of a batch (``inputs`` for :class:`TokenLoss`)."""

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagates an already normalised loss (divided by the step's trained tokens)."""

    def step(self) -> None:
        """After a step's micro-batches: the optimizer and learning-rate steps, gradients cleared."""

    def learning_rate(self) -> float: ...

    def save_checkpoint(self, target: Path, client_state: dict[str, Any]) -> None:
        """``checkpoint-N``: what resumes exactly, with ``client_state`` (step, loader, ...) inside."""

    def has_checkpoint(self, folder: Path) -> bool: ...

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        """Restores weights and optimizer state; returns the client state saved with them."""

    def save_model(self, target: Path) -> None:
        """A Hugging Face folder of the model (or its adapters), written by rank 0."""

    def generation(self) -> tuple[torch.dtype | None, bool]:
        """(autocast dtype, whether every rank must take part) for generating samples."""


def make_backend(ds_config: dict[str, Any] | None, **arguments: Any) -> Backend:
    """The DeepSpeed backend for a DeepSpeed config, else the plain one."""
    if ds_config:
        from .deepspeed import DeepSpeedBackend  # noqa: PLC0415

        return DeepSpeedBackend(ds_config=ds_config, **arguments)
    from .plain import PlainBackend  # noqa: PLC0415

    return PlainBackend(**arguments)

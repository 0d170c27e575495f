"""The DeepSpeed backend: ZeRO 1-3 (train/zero.py builds its config). The engine owns precision,
the sharded optimizer state and the accumulation boundary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import zero
from ..config import TrainConfig


class DeepSpeedBackend:
    checkpoint_format = "deepspeed"

    def __init__(self, *, ds_config: dict[str, Any], config: TrainConfig, model: Any, token_loss: torch.nn.Module,
                 world: int, rank: int, device: torch.device, compute_dtype: torch.dtype,
                 lr_lambda: Callable[[int], float], load_weights: Callable[[Path], None]) -> None:
        del device, compute_dtype, load_weights  # the engine places, casts and restores itself
        self.model, self.rank, self.world = model, rank, world
        self.full = config.method.name == "full"
        self.zero3 = zero.is_zero3(ds_config)
        self.engine, self.optimizer, self.scheduler = zero.initialize(token_loss, ds_config, lr_lambda)

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        loss: torch.Tensor = self.engine(**inputs)  # DeepSpeed casts the model to its 16-bit dtype itself
        return loss

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # already divided by the global token count
        self.engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary only

    def step(self) -> None:
        """Nothing: the engine stepped at the accumulation boundary, in ``backward``."""

    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_checkpoint(self, target: Path, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(target), tag=f"global_step{client_state['step']}", client_state=client_state)

    def has_checkpoint(self, folder: Path) -> bool:
        return (folder / "latest").is_file()

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        _, state = self.engine.load_checkpoint(str(folder))
        return dict(state)

    def save_model(self, target: Path) -> None:
        zero.save_hf(self.engine, self.model, target, self.rank, full=self.full)

    def generation(self) -> tuple[torch.dtype | None, bool]:
        return None, self.world > 1 and self.zero3

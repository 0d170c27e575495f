"""The plain torch backend: DDP on several ranks, AdamW, autocast, fp16 loss scaling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig

STATE_FILE = "trainer_state.pt"


class PlainBackend:
    checkpoint_format = "huggingface"

    def __init__(self, *, config: TrainConfig, model: Any, token_loss: torch.nn.Module, world: int, rank: int,
                 device: torch.device, compute_dtype: torch.dtype, lr_lambda: Callable[[int], float],
                 load_weights: Callable[[Path], None]) -> None:
        self.config, self.model, self.rank = config, model, rank
        self.device, self.compute_dtype = device, compute_dtype
        self.load_weights = load_weights
        # DDP wraps the loss module, not the model, so that synchronisation sees the whole computation
        self.loss_model: Any = torch.nn.parallel.DistributedDataParallel(token_loss) if world > 1 else token_loss
        params = [p for p in model.parameters() if p.requires_grad]
        optim = config.optim
        # fused on CUDA: one kernel for every parameter's update, not several per tensor group
        self.optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay,
                                           betas=(optim.betas[0], optim.betas[1]),
                                           fused=True if device.type == "cuda" else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        # fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not
        self.scaler = torch.amp.GradScaler(device.type, enabled=compute_dtype == torch.float16)

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32):
            loss: torch.Tensor = self.loss_model(**inputs)
        return loss

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.config.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_checkpoint(self, target: Path, client_state: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.model.save_pretrained(str(target))
        torch.save({**client_state, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict()}, target / STATE_FILE)

    def has_checkpoint(self, folder: Path) -> bool:
        return (folder / STATE_FILE).is_file()

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        state: dict[str, Any] = torch.load(folder / STATE_FILE, weights_only=False)
        self.load_weights(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return state

    def save_model(self, target: Path) -> None:
        if self.rank == 0:
            self.model.save_pretrained(str(target))

    def generation(self) -> tuple[torch.dtype | None, bool]:
        return (self.compute_dtype if self.compute_dtype != torch.float32 else None), False

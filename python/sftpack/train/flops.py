"""Model FLOPs per step and MFU (model FLOPs utilisation), counting useful work only.

Per trained-on token, a matmul weight of N parameters costs 2N FLOPs forward and 2N backward
for the input gradient, plus 2N for its own gradient when it is trained: 6N for full SFT, 4N
for a frozen LoRA/QLoRA base (adapters add their own 6N_lora). Causal attention over a document
of n tokens costs 2·n²·width per layer forward (QKᵀ and AV, half the square each), three times
that with the backward pass. Padding is not useful work and is not counted; activation
recomputation (gradient checkpointing) is not counted either, as is usual for MFU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

# Dense bf16/fp16 tensor-core peaks (no sparsity), FLOP/s.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
              "A6000": 155e12, "4090": 165e12}


def peak_flops(device: torch.device) -> float | None:
    """The device's dense half-precision peak; ``SFTPACK_PEAK_TFLOPS`` overrides; None if unknown."""
    override = os.environ.get("SFTPACK_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


class FlopCounter:
    """FLOPs of one training step from the documents it saw."""

    def __init__(self, model: Any) -> None:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.layers = int(config.num_hidden_layers)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.attention_width = int(config.num_attention_heads * head_dim)
        frozen = trained = 0
        for name, param in model.named_parameters():
            if param.dim() < 2 or "embed" in name:
                continue  # embeddings are lookups; norms and biases are negligible
            quant_state = getattr(param, "quant_state", None)  # a packed 4-bit weight: count what it stands for
            count = int(quant_state.shape.numel()) if quant_state is not None else param.numel()
            if param.requires_grad:
                trained += count
            else:
                frozen += count
        lm_head = model.get_output_embeddings()
        if lm_head is not None and lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr():
            tied = lm_head.weight.numel()  # tied lm_head shares the embedding: still a matmul
            trained, frozen = (trained + tied, frozen) if lm_head.weight.requires_grad else (trained, frozen + tied)
        self.per_token = 6 * trained + 4 * frozen

    def step(self, document_lengths: np.ndarray) -> float:
        tokens = float(document_lengths.sum())
        attention_forward = 2.0 * float((document_lengths.astype(np.float64) ** 2).sum()) * self.attention_width
        return self.per_token * tokens + 3.0 * attention_forward * self.layers


def document_lengths(batch: dict[str, Any]) -> np.ndarray:
    """Lengths of the real documents in a collated batch (either shape), padding excluded."""
    cu = batch.get("cu_seq_lens_q")
    if cu is not None:
        return np.diff(np.asarray(cu, dtype=np.int64))
    positions = np.asarray(batch["position_ids"])
    mask = batch.get("attention_mask")
    if mask is not None and getattr(mask, "dim", lambda: 2)() == 4:
        real = np.asarray(torch.diagonal(mask[:, 0], dim1=-2, dim2=-1))
        real = real == 0 if real.dtype.kind == "f" else real.astype(bool)
    elif mask is not None:
        real = np.asarray(mask).astype(bool)
    else:
        real = np.ones(positions.shape, dtype=bool)
    lengths: list[int] = []
    for row_positions, row_real in zip(positions, real, strict=True):
        starts = np.flatnonzero((row_positions == 0) & row_real)
        ends = np.append(starts[1:], int(row_real.sum()))
        lengths.extend((ends - starts).tolist())
    return np.asarray(lengths, dtype=np.int64)

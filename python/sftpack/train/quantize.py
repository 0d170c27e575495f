"""QLoRA's 4-bit base, rounded alike on the CPU and on a CUDA GPU.

bitsandbytes stores a 4-bit weight as NF4 codes and one scale per 64 weights. With double
quantization (QLoRA's default) those scales are rounded in turn, 256 at a time, to the 8-bit codes
of its dynamic map. Its CUDA kernel takes the nearest code; its CPU kernel shortcuts the search and
puts about 0.2% of the scales one code away, and which ones changes between bitsandbytes versions.
An adapter trained on a GPU and merged or chatted with on a CPU (or the other way round) would then
meet a slightly different base. While sftpack loads a 4-bit base, the CPU takes the nearest scale
code by the CUDA kernel's own search, so the same scales round to the same codes on every device and
bitsandbytes version (tests/test_qlora.py on the CPU, tests/test_gpu.py against the CUDA kernel).
The scales rounded are the blocks' maxima less their float32 mean, which a GPU may sum one rounding
step apart; then the few on a code boundary (about 0.04%) take the next code. The NF4 codes already
agree (before bitsandbytes 0.50, all but about one float32 or float16 weight in 16 million).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

# The CUDA kernel searches a 256-entry map by halving from its middle (bitsandbytes csrc/kernels.cu)
MAP_SIZE = 256


def kernel_search(code: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
    """The 8-bit code bitsandbytes' CUDA kernel picks for each value of ``scaled`` (in [-1, 1]):
    a binary search of the sorted map ``code``, then the nearer of the two codes around the value.
    Mirrored step by step, so a tie or a NaN lands where it lands on the GPU."""
    pivot = torch.full(scaled.shape, MAP_SIZE // 2 - 1, dtype=torch.long)
    lower_pivot, upper_pivot = torch.zeros_like(pivot), torch.full_like(pivot, MAP_SIZE - 1)
    lower, upper = torch.full_like(scaled, -1.0), torch.full_like(scaled, 1.0)
    value = code[pivot]
    step = MAP_SIZE // 4
    while step:
        above = scaled > value
        lower_pivot, lower = torch.where(above, pivot, lower_pivot), torch.where(above, value, lower)
        upper_pivot, upper = torch.where(above, upper_pivot, pivot), torch.where(above, upper, value)
        pivot = torch.where(above, pivot + step, pivot - step)
        value = code[pivot]
        step //= 2
    upper = torch.where(upper_pivot == MAP_SIZE - 1, code[-1], upper)
    lower = torch.where(lower_pivot == 0, code[0], lower)
    above = scaled > value
    take_upper = above & (scaled > (upper + value) * 0.5)
    take_lower = ~above & (scaled < (lower + value) * 0.5)
    chosen = torch.where(take_upper, upper_pivot, torch.where(take_lower, lower_pivot, pivot))
    return chosen.to(torch.uint8)


def blockwise_codes(values: torch.Tensor, code: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """The codes the CUDA kernel gives ``values`` quantized ``blocksize`` at a time, each block
    scaled by the reciprocal of its ``absmax`` in float32 as the kernel scales it."""
    flat = values.reshape(-1).float()
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % blocksize))
    scaled = (padded.view(-1, blocksize) * (1.0 / absmax.float()).unsqueeze(1)).reshape(-1)[: flat.numel()]
    return kernel_search(code.float().cpu(), scaled).reshape(values.shape)


@contextlib.contextmanager
def scales_rounded_as_on_cuda() -> Iterator[None]:
    """While open, bitsandbytes' 8-bit blockwise quantization of CPU tensors (the 4-bit base's
    scales under double quantization) gives the CUDA kernel's codes; other devices are untouched."""
    import bitsandbytes.functional as bnb_functional  # noqa: PLC0415

    original = bnb_functional.quantize_blockwise

    def quantize_blockwise(A: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: N803 (bitsandbytes' name)
        codes, state = original(A, *args, **kwargs)
        # nested=True rounds the block maxima too: they are no longer the ones the codes need
        if A.device.type == "cpu" and not state.nested and state.code.numel() == MAP_SIZE:
            codes.copy_(blockwise_codes(A, state.code, state.absmax, state.blocksize).view(codes.shape))
        return codes, state

    bnb_functional.quantize_blockwise = quantize_blockwise
    try:
        yield
    finally:
        bnb_functional.quantize_blockwise = original

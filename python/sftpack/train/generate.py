"""Greedy replies with the training chat template, for samples during training and the quick
start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def generate_reply(model: Any, tokenizer_dir: Path, prompt: str, max_new_tokens: int = 64,
                   system: str | None = None, trust_remote_code: bool = False) -> str:
    from transformers import AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=trust_remote_code)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    encoded: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    ids = list(encoded["input_ids"])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids], device=device), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    if was_training:
        model.train()
    return str(tokenizer.decode(out[0][len(ids):], skip_special_tokens=True)).strip()

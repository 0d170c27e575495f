"""A custom PyTorch training loop on an sftpack pack: padded batches with document masks (SDPA),
loss normalized by the trained tokens of each step, exact resume through the loader's state.

    python examples/custom_loop.py PACK MODEL_DIR [--steps 20]

Runs on the CPU; MODEL_DIR is any local Hugging Face causal LM whose tokenizer made the pack
(`sftpack quickstart` leaves one: quickstart/pack and quickstart/base-model).
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM

from sftpack import PackDataset, PackLoader
from sftpack.data import collate_padded, global_trained_tokens, sum_token_loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pack")
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = PackLoader(PackDataset(args.pack), batch_size=2, seed=0,
                        collate=lambda rows: collate_padded(rows, document_mask=True, return_tensors="pt"))
    step = 0
    while step < args.steps:
        for batch in loader:
            labels = batch.pop("labels")
            loss = sum_token_loss(model(**batch).logits, labels) / global_trained_tokens([{"labels": labels}])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            print(f"step {step} loss {loss.item():.4f}")
            if step == args.steps:
                break
        else:
            loader.set_epoch(loader.epoch + 1)
    print("loader state to save with a checkpoint:", loader.state_dict())


if __name__ == "__main__":
    main()

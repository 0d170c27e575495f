"""An sftpack pack with Hugging Face's Trainer: PackDataset is a map-style dataset, and the
padded collate with document masks keeps packed documents apart under SDPA.

    python examples/hf_trainer.py PACK MODEL_DIR OUT [--steps 10]
"""

from __future__ import annotations

import argparse

from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from sftpack import PackDataset
from sftpack.data import collate_padded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pack")
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    training = TrainingArguments(output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=2,
                                 learning_rate=1e-3, logging_steps=1, report_to=[], save_strategy="no",
                                 remove_unused_columns=False, use_cpu=True)
    trainer = Trainer(model=model, args=training, train_dataset=PackDataset(args.pack),
                      data_collator=lambda rows: collate_padded(rows, document_mask=True, return_tensors="pt"))
    result = trainer.train()
    print(f"final training loss {result.training_loss:.4f}")


if __name__ == "__main__":
    main()

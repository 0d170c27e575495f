"""Regenerates python/sftpack/assets/demo: a small synthetic chat dataset and a byte-level BPE
tokenizer trained on it, with a ChatML chat template. Deterministic; run from the repo root:

    python scripts/make_demo_assets.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = Path("python/sftpack/assets/demo")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "eel", "yak"]


def conversation(rng: random.Random) -> dict[str, object]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    color, animal = rng.choice(COLORS), rng.choice(ANIMALS)
    turns = [
        {"role": "user", "content": f"What is {a} plus {b}?"},
        {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        {"role": "user", "content": f"Name a {color} {animal}."},
        {"role": "assistant", "content": f"A {color} {animal} could be called {color.title()}{animal}."},
    ]
    if rng.random() < 0.3:
        turns.insert(0, {"role": "system", "content": "You are a concise assistant."})
    return {"messages": turns}


def main() -> None:
    rng = random.Random(0)
    records = [conversation(rng) for _ in range(200)]
    # Two records with the mistakes users make, so `sftpack demo` shows what check reports.
    bad_lines = [
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "loss": False}]}',
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}',
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records]
    lines[50:50] = bad_lines[:1]
    lines[120:120] = bad_lines[1:]
    (OUT / "chat.jsonl").write_text("\n".join(lines) + "\n")

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [m["content"] for r in records for m in r["messages"]]  # type: ignore[index]
    tokenizer.train_from_iterator(texts * 3, trainer)
    tokenizer.save(str(OUT / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "bos_token": None, "chat_template": CHATML}
    (OUT / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main()

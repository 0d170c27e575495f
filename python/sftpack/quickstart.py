"""The quick start: make a small chat task and a tiny model, preprocess, train, and show the
model answering. Nothing is downloaded; about two minutes on two CPU cores.

The task: "Name a red cat." -> "A red cat could be called Redcat." A randomly initialised model
knows nothing, so right answers show that data, masks, packing and training work together. It
is also asked about colour/animal pairs it never saw, which it sometimes gets right too.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import yaml

from .preprocess import preprocess

ASSETS = Path(__file__).resolve().parent / "assets" / "demo"
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "eel", "yak"]
HELD_OUT = [("green", "owl"), ("black", "fox"), ("white", "eel")]
SEEN = [("red", "cat"), ("blue", "bee"), ("yellow", "dog"), ("purple", "cow")]
SYSTEM = "You are a concise assistant."


def answer(color: str, animal: str) -> str:
    return f"A {color} {animal} could be called {color.title()}{animal}."


def write_data(path: Path, count: int = 3000, seed: int = 0) -> None:
    rng = random.Random(seed)
    pairs = [(c, a) for c in COLORS for a in ANIMALS if (c, a) not in HELD_OUT]
    lines = []
    for _ in range(count):
        color, animal = rng.choice(pairs)
        messages = [{"role": "user", "content": f"Name a {color} {animal}."},
                    {"role": "assistant", "content": answer(color, animal)}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        lines.append(json.dumps({"messages": messages}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_base_model(target: Path, seed: int = 0) -> None:
    """A tiny random-init Llama-architecture model with the bundled tokenizer."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: PLC0415

    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ASSETS / name, target / name)
    vocab = len(json.loads((ASSETS / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=2, pad_token_id=0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(target))


def recipe(steps: int) -> dict[str, Any]:
    """The recipe quickstart trains with; its paths are relative to the folder it is written to,
    so `sftpack train OUT/recipe.yaml` runs it again from anywhere."""
    return {
        "model": {"path": "base-model", "dtype": "float32", "attention": "auto"},
        "method": {"name": "full"},
        "data": {"pack": "pack", "batch_size": 4, "seed": 0},
        "optim": {"lr": 3e-3, "warmup_steps": 20, "scheduler": "cosine", "max_steps": steps, "weight_decay": 0.0},
        "output": {"dir": "run", "log_every": 10, "eval_every": 100},
        "seed": 0,
    }


def quickstart(out: Path, steps: int = 300) -> dict[str, Any]:
    """Runs the whole path; returns the held-out answers and whether each is right."""
    from .train import load_config, train  # noqa: PLC0415
    from .train.generate import ChatFormat, generate_reply  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    write_data(out / "data" / "chat.jsonl")
    make_base_model(out / "base-model")
    result = preprocess([out / "data" / "chat.jsonl"], out / "base-model", out / "pack", max_length=512,
                        overwrite=True, val_size=0.05)
    counts = result["manifest"]["counts"]
    print(f"preprocessed {counts['records_read']:,} conversations into {counts['rows']:,} rows "
          f"({100 * counts['packing_efficiency']:.1f}% full); {result['manifest']['validation']['records']:,} "
          f"held out for evaluation")
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe(steps), sort_keys=False))
    model_dir = train(load_config(out / "recipe.yaml"))
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    chat = ChatFormat.for_folder(model_dir, model_dir)
    answers = []
    for (color, animal), seen in [*((p, True) for p in SEEN), *((p, False) for p in HELD_OUT)]:
        prompt = f"Name a {color} {animal}."
        reply = generate_reply(model, chat, [{"role": "user", "content": prompt}], max_new_tokens=24)
        answers.append({"prompt": prompt, "reply": reply, "expected": answer(color, animal),
                        "correct": reply == answer(color, animal), "seen_in_training": seen})
    evals = [r for r in map(json.loads, (out / "run" / "metrics.jsonl").read_text().splitlines()) if "eval_loss" in r]
    return {"model": str(model_dir), "pack": str(out / "pack"), "answers": answers, "evaluations": evals}

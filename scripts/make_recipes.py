"""Writes the ready recipes in python/sftpack/configs/: model families x QLoRA / LoRA / full.

The YAML files are what users copy and edit (`sftpack configs copy NAME .`); this script keeps
them consistent. Settings follow the usual choices for each method (XTuner's configs among
them): QLoRA r=64 alpha=16 with a 0.3 gradient clip, LoRA r=16 alpha=32, full SFT at 1e-5 under
DeepSpeed ZeRO-3 (ZeRO-2 for models under 4B).

    python scripts/make_recipes.py
"""

from __future__ import annotations

from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "python" / "sftpack" / "configs"

# name, Hugging Face model id (the directory users download), max length, preprocess template
# note, trust_remote_code, billions of parameters
FAMILIES = [
    ("qwen2_5_7b", "Qwen2.5-7B-Instruct", 4096, "", False, 7.6),
    ("qwen3_8b", "Qwen3-8B", 4096, "", False, 8.2),
    ("llama3_1_8b", "Meta-Llama-3.1-8B-Instruct", 8192, "", False, 8.0),
    ("llama3_2_3b", "Llama-3.2-3B-Instruct", 8192, "", False, 3.2),
    ("internlm2_5_7b", "internlm2_5-7b-chat", 4096, " --template internlm2_chat", True, 7.7),
    ("internlm3_8b", "internlm3-8b-instruct", 4096, "", True, 8.8),
    ("mistral_7b", "Mistral-7B-Instruct-v0.3", 4096, "", False, 7.2),
    ("gemma2_9b", "gemma-2-9b-it", 4096, "", False, 9.2),
    ("gemma3_4b", "gemma-3-4b-it", 4096, "", False, 4.3),
    ("phi3_mini", "Phi-3-mini-4k-instruct", 4096, "", False, 3.8),
    ("deepseek_r1_distill_qwen_7b", "DeepSeek-R1-Distill-Qwen-7B", 8192, "", False, 7.6),
    ("deepseek_v2_lite", "DeepSeek-V2-Lite-Chat", 4096, "", True, 15.7),
]

METHODS = {
    "qlora": {"title": "QLoRA (4-bit NF4 base, LoRA adapters; bitsandbytes, a CUDA GPU for a model this size)",
              "method": "  name: qlora\n  lora_r: 64\n  lora_alpha: 16\n  lora_dropout: 0.1\n"
                        "  target_modules: all-linear\n  quant_type: nf4\n  double_quant: true\n"
                        "  compute_dtype: bfloat16\n",
              "lr": "2.0e-4", "clip": "0.3", "accum": 16, "epochs": 3},
    "lora": {"title": "LoRA (16-bit base, LoRA adapters)",
             "method": "  name: lora\n  lora_r: 16\n  lora_alpha: 32\n  lora_dropout: 0.05\n"
                       "  target_modules: all-linear\n",
             "lr": "1.0e-4", "clip": "1.0", "accum": 16, "epochs": 3},
    "full": {"title": "full fine-tuning (all weights; DeepSpeed ZeRO shards them over the GPUs)",
             "method": "  name: full\n", "lr": "1.0e-5", "clip": "1.0", "accum": 4, "epochs": 2},
}


def recipe(name: str, model_id: str, max_length: int, template: str, remote: bool, billions: float,
           method: str) -> str:
    spec = METHODS[method]
    stem = f"{name}_{method}"
    model = f"/models/{model_id}"
    zero = "zero3" if billions >= 4 else "zero2"
    launch = f"NPROC_PER_NODE=8 sftpack train {stem}.yaml" if method == "full" else f"sftpack train {stem}.yaml"
    lines = [
        f"# {model_id}: {spec['title']}.",
        f"#   sftpack preprocess data.jsonl --tokenizer {model} --out packs/my-data "
        f"--max-length {max_length}{template} --val-size 0.02",
        f"#   sftpack configs copy {stem} . && {launch}",
    ]
    if method != "full":
        lines.append(f"#   many GPUs: NPROC_PER_NODE=8 sftpack train {stem}.yaml [--deepspeed zero2]")
    lines += [
        "",
        "model:",
        f"  path: {model}",
        "  dtype: bfloat16",
        "  attention: auto",
        "  gradient_checkpointing: true",
    ]
    if remote:
        lines.append("  trust_remote_code: true   # the model's code ships with its checkpoint")
    lines += ["method:", spec["method"].rstrip("\n"),
              "data:", "  pack: packs/my-data", "  batch_size: 1",
              "optim:", f"  lr: {spec['lr']}", "  warmup_steps: 20", "  scheduler: cosine",
              f"  epochs: {spec['epochs']}", f"  grad_accum: {spec['accum']}", f"  max_grad_norm: {spec['clip']}",
              "output:", f"  dir: runs/{stem}", "  log_every: 10", "  save_every: 500",
              "  eval_every: 250   # on the pack's validation split (--val-size), if it has one",
              "  sample_every: 500", "  sample_prompts:", "    - Introduce yourself in one sentence."]
    if method == "full":
        lines += ["distributed:", f"  deepspeed: {zero}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    for old in TARGET.glob("*.yaml"):
        old.unlink()
    for family in FAMILIES:
        for method in METHODS:
            (TARGET / f"{family[0]}_{method}.yaml").write_text(recipe(*family, method))
    print(f"{len(FAMILIES) * len(METHODS)} recipes written to {TARGET}")


if __name__ == "__main__":
    main()

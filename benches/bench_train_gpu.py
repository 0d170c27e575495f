"""GPU training benchmark: tokens/s, MFU and peak memory of `sftpack train`, packed varlen vs
padded, for LoRA, QLoRA and full SFT on random-init models of real architectures, fed the
real multi-turn corpus (benches/corpus.py). Targets: packed >= 2x padded tokens/s; LoRA on Llama-3-8B >= 9,500
tokens/s on one H100; QLoRA >= 0.85x LoRA tokens/s at <= 0.5x its memory.

Two steps, because the GPU machine cannot read ../shared (the Llama-3 tokenizer lives there):

    python benches/bench_train_gpu.py prepare --out .gpu          # here: packs + tokenizer
    python benches/bench_train_gpu.py run --work .gpu --runs lora:packed,lora:padded,qlora:packed

With `prepare --val-size 0.02` and `run --eval-every 30 --sample-every 30 --steps 30`, one
evaluation over the validation split and one sample run after the last measured step: their
cost is reported (eval_s, eval tokens/s, sample_s) without touching the training figures.

`packed`: 4096-token rows from best-fit packing, padding-free batches, model.attention=auto
(PyTorch varlen flash attention, or flash-attn's). `padded`: the peers' default without packing:
one conversation per row, rows padded to the longest in the batch, SDPA. Tokens/s count real
tokens only and are measured after the warm-up steps; MFU counts useful model FLOPs
(sftpack.train.flops) against the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama3-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
                  "max_position_embeddings": 8192, "tie_word_embeddings": False},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "tie_word_embeddings": True},  # a smoke test of this script, on any device
    "llama3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "rope_theta": 500000.0,
                    "max_position_embeddings": 8192, "tie_word_embeddings": True},
}
# packed: 2 rows of 4096 tokens a step. padded: 4 conversations a step (~215 tokens each on average
# in this corpus, up to 4096), which keeps the padded batch's logits inside an 80 GB GPU.
LAYOUTS = {"packed": {"pack": "packed", "batch_size": 2, "attention": "auto"},
           "padded": {"pack": "unpacked", "batch_size": 4, "attention": "sdpa"}}
METHODS = {"lora": {"name": "lora", "lora_r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
           "qlora": {"name": "qlora", "lora_r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
           "full": {"name": "full"}}


def prepare(out: Path, size_mb: float, max_length: int, val_size: float | None) -> None:
    sys.path.insert(0, str(ROOT / "benches"))
    from corpus import SHARED, write_corpus  # noqa: PLC0415

    from sftpack.preprocess import preprocess  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.jsonl"
    write_corpus(corpus, size_mb)
    tokenizer = out / "tokenizer"
    shutil.copytree(SHARED / "tokenizers" / "llama3", tokenizer, dirs_exist_ok=True)
    for name, pack in (("packed", True), ("unpacked", False)):
        summary = preprocess([corpus], tokenizer, out / name, pack=pack, max_length=max_length, overwrite=True,
                             val_size=val_size)
        print(name, json.dumps(summary.get("counts", summary))[:300])
    corpus.unlink()


def make_model(work: Path, arch: str) -> Path:
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: PLC0415

    target = Path("/tmp/sftpack-bench") / arch
    if (target / "config.json").is_file():
        return target
    vocab = len(json.loads((work / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]) + 256
    config = LlamaConfig(vocab_size=vocab, bos_token_id=128000, eos_token_id=128009, **ARCHITECTURES[arch])
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(target))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(work / "tokenizer" / name, target / name)
    return target


def steady_state(metrics: Path, warmup: int) -> dict[str, float]:
    """Training throughput between the warm-up and the last logged step (evaluations and samples
    included in the wall time, so run them at the end or not at all when comparing speeds)."""
    records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    first, last = records[warmup - 1], records[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    result = {"tokens_per_s": (last["tokens"] - first["tokens"]) / seconds,
              "max_memory_gb": last.get("max_memory_gb", 0.0), "final_loss": last["loss"], "steps": last["step"]}
    if "mfu" in last:
        result["mfu"] = (last["mfu"] * last["elapsed_s"] - first["mfu"] * first["elapsed_s"]) / seconds
    return result


def run_one(work: Path, method: str, layout: str, arch: str, steps: int, warmup: int,
            gradient_checkpointing: bool, eval_every: int = 0, sample_every: int = 0) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    from sftpack.train import load_config, train  # noqa: PLC0415

    model_dir = make_model(work, arch)
    out = Path("/tmp/sftpack-bench/runs") / f"{arch}-{method}-{layout}"
    shutil.rmtree(out, ignore_errors=True)
    shape = LAYOUTS[layout]
    raw = {"model": {"path": str(model_dir), "dtype": "bfloat16", "attention": shape["attention"],
                     "gradient_checkpointing": gradient_checkpointing},
           "method": METHODS[method],
           "data": {"pack": str(work / shape["pack"]), "batch_size": shape["batch_size"]},
           "optim": {"lr": 1e-5 if method == "full" else 1e-4, "max_steps": steps, "scheduler": "constant"},
           "output": {"dir": str(out), "report_to": [], "eval_every": eval_every, "sample_every": sample_every,
                      "sample_prompts": ["Introduce yourself in one sentence."], "sample_max_new_tokens": 64}}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    train(load_config(raw=raw))
    result = {"arch": arch, "method": method, "layout": layout, "gradient_checkpointing": gradient_checkpointing,
              "wall_s": round(time.monotonic() - started, 1), **steady_state(out / "metrics.jsonl", warmup)}
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    if evals:
        result["eval_s"] = evals[-1]["eval_s"]
        validation = json.loads((work / shape["pack"] / "validation" / "manifest.json").read_text())
        result["eval_tokens_per_s"] = round(validation["counts"]["tokens"] / max(evals[-1]["eval_s"], 1e-9))
    if (out / "samples.jsonl").is_file():
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        result["sample_s"] = samples[-1]["seconds"] if samples else None
    gc.collect()  # the finished run's model sits in reference cycles: free it before the next run measures memory
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def report(results: list[dict[str, Any]]) -> None:
    print(f"\n{'arch':12} {'method':6} {'layout':7} {'tokens/s':>10} {'MFU':>6} {'mem GB':>7} {'loss':>7}")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"{r['arch']:12} {r['method']:6} {r['layout']:7} {r['tokens_per_s']:10,.0f} {mfu:>6} "
              f"{r['max_memory_gb']:7.1f} {r['final_loss']:7.3f}")
    by = {(r["arch"], r["method"], r["layout"]): r for r in results}
    for (arch, method, layout), r in by.items():
        padded = by.get((arch, method, "padded"))
        if layout == "packed" and padded:
            print(f"ratio {arch} {method}: packed/padded tokens/s = {r['tokens_per_s'] / padded['tokens_per_s']:.2f}")
    lora, qlora = by.get(("llama3-8b", "lora", "packed")), by.get(("llama3-8b", "qlora", "packed"))
    if lora and qlora:
        print(f"ratio llama3-8b qlora/lora: tokens/s {qlora['tokens_per_s'] / lora['tokens_per_s']:.2f}, "
              f"memory {qlora['max_memory_gb'] / lora['max_memory_gb']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build the packed and unpacked packs (needs ../shared)")
    prep.add_argument("--out", type=Path, default=ROOT / ".gpu")
    prep.add_argument("--size-mb", type=float, default=6.0)
    prep.add_argument("--max-length", type=int, default=4096)
    prep.add_argument("--val-size", type=float, help="hold out a validation split (for --eval-every)")
    run = sub.add_parser("run", help="train and measure (needs a CUDA GPU)")
    run.add_argument("--work", type=Path, default=ROOT / ".gpu")
    run.add_argument("--runs", default="lora:packed,lora:padded,qlora:packed,qlora:padded",
                     help="method:layout pairs, comma-separated")
    run.add_argument("--arch", default="llama3-8b", choices=sorted(ARCHITECTURES))
    run.add_argument("--steps", type=int, default=30)
    run.add_argument("--warmup", type=int, default=5)
    run.add_argument("--gradient-checkpointing", action="store_true")
    run.add_argument("--eval-every", type=int, default=0, help="evaluate on the validation split every N steps")
    run.add_argument("--sample-every", type=int, default=0, help="generate a sample every N steps")
    run.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.size_mb, args.max_length, args.val_size)
        return
    results = []
    for item in args.runs.split(","):
        method, layout = item.split(":")
        results.append(run_one(args.work, method, layout, args.arch, args.steps, args.warmup,
                               args.gradient_checkpointing, args.eval_every, args.sample_every))
        print(json.dumps(results[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()

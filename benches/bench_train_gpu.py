"""GPU training benchmark: every configuration trained by `sftpack train` and, in the same process
on the same GPU, by a baseline — transformers' Trainer on the same pack's documents through its
padding-free collator (DataCollatorWithFlattening), with the same attention kernel as ours
(flash-attn's, or PyTorch's varlen kernel registered in transformers under sftpack's name), so the
difference is the rest of the training step; SDPA on the CPU. Writes benches/results/train_gpu.json.

Two steps, because the GPU machine reads nothing beside the repository:

    python benches/bench_train_gpu.py prepare --out .gpu   # here: the pack, the tokenizer, the commit
    python benches/bench_train_gpu.py run --work .gpu      # on the GPU (scripts/gpu_checks.sh bench)

`--runs` picks some; runs of one device and commit split over several commands add up in one file.

Runs (random-init models from real configs, nothing downloaded; the Qwen3 tokenizer of tests/data
and the real multi-turn corpus of benches/corpus.py; 8,192 tokens an optimizer step, as two
accumulated micro-steps of one 4,096-token row):

    full-4b    full SFT of Qwen3-4B                                target: MFU >= 0.40 (aim 0.45)
    lora-8b    LoRA r16 on every linear layer of Qwen3-8B          target: >= 1.3x the baseline's tokens/s
    qlora-8b   QLoRA (NF4 base, bitsandbytes) r16 on Qwen3-8B      target: peak memory <= 0.8x the baseline's
    zero3-2b   full SFT of Qwen3-1.7B under DeepSpeed ZeRO-3       target: runs to the end

Tokens/s count every token of the batches (no padding exists on either side) between the end of
the warm-up steps and the last step; MFU counts useful model FLOPs (sftpack.train.flops) against
the GPU's dense bf16 peak. A run that fails (out of memory, say) is written with its error and
the next one goes on. `--scale tiny` swaps each model for a 2-layer one of its family: a test
of this script on any device (tests/test_bench_train_gpu.py runs it on the CPU).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results" / "train_gpu.json"

# Qwen3's published configs (config.json of Qwen/Qwen3-1.7B, -4B, -8B), vocabulary included.
QWEN3_COMMON = {"vocab_size": 151936, "num_key_value_heads": 8, "head_dim": 128, "rope_theta": 1000000.0,
                "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "bos_token_id": 151643,
                "eos_token_id": 151645}
MODELS: dict[str, dict[str, Any]] = {
    "qwen3-1.7b": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                   "num_attention_heads": 16, "tie_word_embeddings": True},
    "qwen3-4b": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "tie_word_embeddings": True},
    "qwen3-8b": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "tie_word_embeddings": False},
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16}
LORA = {"lora_r": 16, "lora_alpha": 32, "target_modules": "all-linear"}
RUNS: dict[str, dict[str, Any]] = {
    "full-4b": {"method": "full", "model": "qwen3-4b", "gradient_checkpointing": False, "deepspeed": None},
    "lora-8b": {"method": "lora", "model": "qwen3-8b", "gradient_checkpointing": False, "deepspeed": None},
    "qlora-8b": {"method": "qlora", "model": "qwen3-8b", "gradient_checkpointing": False, "deepspeed": None},
    "zero3-2b": {"method": "full", "model": "qwen3-1.7b", "gradient_checkpointing": True, "deepspeed": "zero3"},
}
# One row a micro-step, two accumulated: without recomputation one row's activations (~20 GB for
# Qwen3-4B) fit on an 80 GB GPU beside full SFT's bf16 weights, gradients and AdamW state (~32 GB),
# and beside the baseline's full-vocabulary logits at 8B; two rows at once would not.
ROWS_PER_MICRO_STEP = 1
GRAD_ACCUM = 2


# ---------------------------------------------------------------------------------------------
# prepare (here)


def prepare(out: Path, size_mb: float, max_length: int) -> None:
    sys.path.insert(0, str(ROOT / "benches"))
    from corpus import tokenizer_dir, write_corpus  # noqa: PLC0415

    from sftpack.preprocess import preprocess  # noqa: PLC0415

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokenizer = tokenizer_dir(out, "qwen3")
    corpus = out / "corpus.jsonl"
    write_corpus(corpus, size_mb)
    result = preprocess([corpus], tokenizer, out / "pack", max_length=max_length)
    corpus.unlink()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    (out / "commit.txt").write_text(commit + ("-dirty" if dirty else "") + "\n")
    counts = result["manifest"]["counts"]
    print(f"prepared {out}: {counts['rows']:,} rows, {counts['tokens']:,} tokens at max_length {max_length}; "
          f"commit {commit[:12]}{' (uncommitted changes)' if dirty else ''}")


# ---------------------------------------------------------------------------------------------
# run (on the GPU)


def make_model(work: Path, name: str, scale: str) -> Path:
    """A random-init bf16 model of the named config, saved once per machine with the tokenizer."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, Qwen3Config  # noqa: PLC0415

    target = Path(os.environ.get("SFTPACK_BENCH_MODELS", "/tmp/sftpack-bench")) / f"{name}-{scale}"
    if (target / "config.json").is_file():
        return target
    shape = {**MODELS[name], **(TINY if scale == "tiny" else {})}
    config = Qwen3Config(**{**QWEN3_COMMON, **shape})
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(target))
    del model
    for file in (work / "qwen3").iterdir():
        shutil.copy(file, target / file.name)
    return target


def release_memory() -> None:
    """Frees the finished run's model (it sits in reference cycles) before the next one measures."""
    import torch  # noqa: PLC0415

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float | None:
    import torch  # noqa: PLC0415

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def steady_state(metrics: Path, warmup: int) -> dict[str, float]:
    """Tokens/s and MFU between the end of step `warmup` and the last step, from sftpack's log."""
    records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    first, last = records[warmup - 1], records[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    result = {"tokens_per_s": round((last["tokens"] - first["tokens"]) / seconds, 1), "final_loss": last["loss"],
              "steps": last["step"]}
    if "mfu" in last:  # the log's MFU is cumulative: take the steady-state part
        result["mfu"] = round((last["mfu"] * last["elapsed_s"] - first["mfu"] * first["elapsed_s"]) / seconds, 4)
    return result


def train_sftpack(work: Path, spec: dict[str, Any], model: Path, steps: int, warmup: int) -> dict[str, Any]:
    from sftpack.train import load_config, train  # noqa: PLC0415

    out = Path(os.environ.get("SFTPACK_BENCH_RUNS", "/tmp/sftpack-bench/runs")) / model.name / spec["method"]
    shutil.rmtree(out, ignore_errors=True)
    method = {"name": spec["method"], **(LORA if spec["method"] != "full" else {})}
    raw: dict[str, Any] = {
        "model": {"path": str(model), "dtype": "bfloat16", "attention": "auto", "kernels": "auto",
                  "gradient_checkpointing": spec["gradient_checkpointing"]},
        "method": method,
        "data": {"pack": str(work / "pack"), "batch_size": ROWS_PER_MICRO_STEP},
        "optim": {"lr": 1e-5 if spec["method"] == "full" else 1e-4, "max_steps": steps, "scheduler": "constant",
                  "grad_accum": GRAD_ACCUM},
        "output": {"dir": str(out), "report_to": [], "save_every": 0},
    }
    if spec["deepspeed"]:
        raw["distributed"] = {"deepspeed": spec["deepspeed"]}
    release_memory()
    train(load_config(raw=raw))
    return {**steady_state(out / "metrics.jsonl", warmup), "peak_mem_gb": peak_memory_gb()}


def pack_documents(pack: Path, rows: int) -> list[list[dict[str, list[int]]]]:
    """The first `rows` rows of the pack, each as its documents (input_ids, labels): what the
    baseline's collator flattens back into the same token stream."""
    from sftpack.data import PackDataset  # noqa: PLC0415

    dataset = PackDataset(pack)
    result = []
    for index in range(min(rows, len(dataset))):
        row = dataset[index]
        bounds = row["cu_seqlens"].tolist()
        result.append([{"input_ids": row["input_ids"][a:b].tolist(), "labels": row["labels"][a:b].tolist()}
                       for a, b in zip(bounds, bounds[1:], strict=False)])
    return result


def baseline_attention(ours: str) -> str:
    """Our padding-free kernel, by the name transformers knows it under (PyTorch's varlen kernel is
    registered there as sftpack's), fed the collator's cu_seq_lens; else SDPA, which keeps the
    flattened documents apart by their position_ids."""
    from sftpack.train.attention import PADDING_FREE, transformers_name  # noqa: PLC0415

    return transformers_name(ours) if ours in PADDING_FREE else "sdpa"


def trainer_deepspeed_config(stage: str | None) -> dict[str, Any] | None:
    """Our shipped ZeRO settings for the Trainer: sftpack writes the batch, precision and
    clipping entries itself (train/zero.py), the Trainer fills them where they say "auto"."""
    if stage is None:
        return None
    from sftpack.train.zero import SHIPPED  # noqa: PLC0415

    config: dict[str, Any] = json.loads((SHIPPED / f"{stage}.json").read_text())
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        config[key] = "auto"
    config["bf16"] = {"enabled": "auto"}
    return config


def train_baseline(work: Path, spec: dict[str, Any], model_dir: Path, steps: int, warmup: int,
                   attention: str) -> dict[str, Any]:
    import torch  # noqa: PLC0415
    from transformers import (  # noqa: PLC0415
        AutoModelForCausalLM,
        DataCollatorWithFlattening,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    cuda = torch.cuda.is_available()
    rows = pack_documents(work / "pack", steps * ROWS_PER_MICRO_STEP * GRAD_ACCUM * 2)
    flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100,
                                         return_flash_attn_kwargs=attention != "sdpa")

    def collate(batch: list[list[dict[str, list[int]]]]) -> dict[str, Any]:
        return flatten([document for row in batch for document in row])

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    release_memory()
    if spec["deepspeed"]:
        # The Trainer's DeepSpeed wants what a launcher sets for one process; sftpack's run left
        # its one-process group initialised, which the Trainer then uses.
        for name, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": "29517"}.items():
            os.environ.setdefault(name, value)
    # The arguments come first: under ZeRO-3 they make from_pretrained load the model partitioned.
    args = TrainingArguments(
        output_dir=str(Path(os.environ.get("SFTPACK_BENCH_RUNS", "/tmp/sftpack-bench/runs")) / "baseline"),
        per_device_train_batch_size=ROWS_PER_MICRO_STEP, gradient_accumulation_steps=GRAD_ACCUM,
        max_steps=steps, learning_rate=1e-5 if spec["method"] == "full" else 1e-4, lr_scheduler_type="constant",
        weight_decay=0.0, bf16=cuda, use_cpu=not cuda, optim="adamw_torch_fused" if cuda else "adamw_torch",
        logging_steps=steps, save_strategy="no", report_to=[], remove_unused_columns=False,
        dataloader_num_workers=0, seed=0, include_num_input_tokens_seen=True,
        gradient_checkpointing=spec["gradient_checkpointing"], gradient_checkpointing_kwargs={"use_reentrant": False},
        deepspeed=trainer_deepspeed_config(spec["deepspeed"]))
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16, "attn_implementation": attention}
    if spec["method"] == "qlora":
        from transformers import BitsAndBytesConfig  # noqa: PLC0415

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if spec["method"] != "full":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: PLC0415

        if spec["method"] == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec["gradient_checkpointing"])
        model = get_peft_model(model, LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"],
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[clock])
    output = trainer.train()
    (t0, n0), (t1, n1) = clock.marks[warmup - 1], clock.marks[-1]
    result = {"tokens_per_s": round((n1 - n0) / (t1 - t0), 1), "peak_mem_gb": peak_memory_gb(),
              "mean_loss": round(float(output.training_loss), 4), "attention": attention, "kernels": "none"}
    del trainer, model
    return result


def guarded(train_run: Any, *args: Any) -> dict[str, Any]:
    """One side of a run; a failure (out of memory, say) becomes its result, so the runs after it
    still happen."""
    try:
        return dict(train_run(*args))
    except Exception as error:  # noqa: BLE001 - any failure is a figure to report, not a crash
        traceback.print_exc()
        failure = {"error": f"{type(error).__name__}: {str(error).strip()[:300]}"}
    release_memory()  # after the except block, which held the failed run's frames
    return failure


def run_one(work: Path, name: str, scale: str, steps: int, warmup: int) -> dict[str, Any]:
    from sftpack.train.attention import choose_attention  # noqa: PLC0415
    from sftpack.train.kernels import choose_kernels  # noqa: PLC0415

    spec = RUNS[name]
    model = make_model(work, spec["model"], scale)
    attention, kernels = choose_attention("auto"), choose_kernels("auto")
    from sftpack.data import PackDataset  # noqa: PLC0415

    seq_len = PackDataset(work / "pack").max_length
    # Liger swaps Qwen3's RoPE function in transformers' module for our run (sftpack puts its
    # classes back itself); the baseline runs transformers' own code, so all of it is restored.
    modeling = importlib.import_module("transformers.models.qwen3.modeling_qwen3")
    stock = dict(vars(modeling))
    ours = guarded(train_sftpack, work, spec, model, steps, warmup)
    for attribute, value in stock.items():
        setattr(modeling, attribute, value)
    baseline = guarded(train_baseline, work, spec, model, steps, warmup, baseline_attention(attention))
    release_memory()
    return {"name": name, "method": spec["method"], "model": spec["model"] + ("" if scale == "full" else f"-{scale}"),
            "seq_len": seq_len, "attention": attention, "kernels": kernels,
            "deepspeed": spec["deepspeed"], "gradient_checkpointing": spec["gradient_checkpointing"],
            "rows_per_micro_step": ROWS_PER_MICRO_STEP, "grad_accum": GRAD_ACCUM,
            "tokens_per_s": ours.get("tokens_per_s"), "mfu": ours.get("mfu"), "peak_mem_gb": ours.get("peak_mem_gb"),
            "final_loss": ours.get("final_loss"), "steps": ours.get("steps", 0),
            **({"error": ours["error"]} if "error" in ours else {}), "baseline": baseline}


def environment(work: Path) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    commit_file = work / "commit.txt"
    return {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "commit": commit_file.read_text().strip() if commit_file.is_file() else None,
            "torch": torch.__version__}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def targets(runs: list[dict[str, Any]]) -> list[tuple[str, float | None, str, bool]]:
    """(what, figure, target, met) for each target whose run is present; a failed side is no figure."""
    by = {r["name"]: r for r in runs}
    checks = []
    if "full-4b" in by:
        mfu = by["full-4b"]["mfu"]
        checks.append(("full-4b MFU", mfu, ">= 0.40", mfu is not None and mfu >= 0.40))
    if "lora-8b" in by:
        r = by["lora-8b"]
        speedup = ratio(r["tokens_per_s"], r["baseline"].get("tokens_per_s"))
        checks.append(("lora-8b tokens/s / baseline", speedup, ">= 1.3", speedup is not None and speedup >= 1.3))
    if "qlora-8b" in by:
        r = by["qlora-8b"]
        memory = ratio(r["peak_mem_gb"], r["baseline"].get("peak_mem_gb"))
        checks.append(("qlora-8b peak memory / baseline", memory, "<= 0.8", memory is not None and memory <= 0.8))
    if "zero3-2b" in by:
        r = by["zero3-2b"]
        checks.append(("zero3-2b steps run", float(r["steps"]), "to the end", r.get("completed", False)))
    return checks


def shown(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def report(result: dict[str, Any]) -> None:
    print(f"\n{result['device']}  torch {result['torch']}  commit {result['commit']}")
    print(f"{'run':10} {'attention':18} {'kernels':7} {'tokens/s':>10} {'baseline':>10} {'ratio':>6} {'MFU':>6} "
          f"{'mem GB':>7} {'base GB':>7}")
    for r in result["runs"]:
        b = r["baseline"]
        speed, base_speed = r["tokens_per_s"], b.get("tokens_per_s")
        print(f"{r['name']:10} {r['attention']:18} {r['kernels']:7} {shown(speed, ',.0f'):>10} "
              f"{shown(base_speed, ',.0f'):>10} {shown(ratio(speed, base_speed), '.2f'):>6} "
              f"{shown(r['mfu'], '.1%'):>6} {shown(r['peak_mem_gb'], '.1f'):>7} "
              f"{shown(b.get('peak_mem_gb'), '.1f'):>7}")
        for side, failed in (("sftpack", r), ("baseline", b)):
            if "error" in failed:
                print(f"  {r['name']} {side} failed: {failed['error']}")
    for what, figure, target, met in targets(result["runs"]):
        print(f"target {what}: {shown(figure, '.2f')} (target {target}) {'met' if met else 'NOT met'}")


def previous_results(path: Path, here: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The results file to add to: the runs it holds from this device and commit, less those about
    to run again, so a set of runs split over several commands ends in one file."""
    if path.is_file():
        previous = json.loads(path.read_text())
        if all(previous.get(key) == here[key] for key in ("device", "commit", "torch")):
            return {**here, "runs": [r for r in previous["runs"] if r["name"] not in names]}
    return {**here, "runs": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build the pack and copy the tokenizer (runs anywhere)")
    prep.add_argument("--out", type=Path, default=ROOT / ".gpu")
    prep.add_argument("--size-mb", type=float, default=4.0)
    prep.add_argument("--max-length", type=int, default=4096)
    run = sub.add_parser("run", help="train each configuration and its baseline (a CUDA GPU; --scale tiny: any)")
    run.add_argument("--work", type=Path, default=ROOT / ".gpu")
    run.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    run.add_argument("--scale", choices=("full", "tiny"), default="full")
    run.add_argument("--steps", type=int, default=20)
    run.add_argument("--warmup", type=int, default=5)
    run.add_argument("--json", type=Path, default=RESULTS, help=f"where the results go (default {RESULTS})")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.size_mb, args.max_length)
        return
    if not 0 < args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    names = args.runs.split(",")
    for name in names:
        if name not in RUNS:
            parser.error(f"unknown run {name!r}; the runs are {', '.join(RUNS)}")
    result = previous_results(args.json, environment(args.work), names)
    for name in names:
        record = run_one(args.work, name, args.scale, args.steps, args.warmup)
        record["completed"] = record["steps"] == args.steps
        result["runs"].append(record)
        print(json.dumps(record), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")  # after every run: a cut-off run keeps the rest
    report(result)


if __name__ == "__main__":
    main()

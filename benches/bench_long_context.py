"""The longest packed row that trains on one GPU: full SFT of Qwen3-4B (random-init from its
published config) on one raw-text row of L tokens, with and without gradient checkpointing,
through `sftpack train` as a user runs it (`attention: auto`, the chunked loss). Each attempt
runs in a process of its own, so an out-of-memory one leaves nothing behind; lengths double from
--start until one fails. Writes benches/results/long_context.json:
{"device", "commit", "torch", "model", "method", "runs": [{"gradient_checkpointing", "longest",
"peak_mem_gb", "tokens_per_s", "attempts": [{"length", "ok", "peak_mem_gb", "tokens_per_s", "error"}]}]}.

    python benches/bench_train_gpu.py prepare             # here: .gpu/ holds the Qwen3 tokenizer
    python benches/bench_long_context.py --work .gpu      # on the GPU (scripts/gpu_checks.sh long)

`--scale tiny --start 256 --stop 1024` runs the same code on a 2-layer model on any device
(tests/test_bench_train_gpu.py does, on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results" / "long_context.json"
WORDS = ("the model reads long documents and learns from every token of each one while attention "
         "stays inside the document that holds it so packed rows train like separate sequences").split()


def make_pack(work: Path, length: int) -> Path:
    """A raw-text pack whose first row is exactly `length` tokens (one document cut into chunks)."""
    from sftpack.preprocess import preprocess  # noqa: PLC0415

    pack = work / "long" / f"pack-{length}"
    if (pack / "manifest.json").is_file():
        return pack
    text = work / "long" / f"text-{length}.jsonl"
    text.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(length)
    text.write_text(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(int(length * 1.1)))}) + "\n")
    preprocess([text], work / "qwen3", pack, format="text", max_length=length, pack=False, overwrite=True)
    return pack


ATTEMPT = r"""
import json, sys, torch
from sftpack.train import load_config, train
raw = json.loads(sys.argv[1])
try:
    train(load_config(raw=raw))
except torch.OutOfMemoryError:
    print(json.dumps({"ok": False, "error": "out of memory"}))
    sys.exit(0)
records = [json.loads(l) for l in open(raw["output"]["dir"] + "/metrics.jsonl") if '"loss"' in l]
peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
steps = [(b["tokens"] - a["tokens"], b["elapsed_s"] - a["elapsed_s"])
         for a, b in zip([{"tokens": 0, "elapsed_s": 0.0}] + records, records)]
tokens, seconds = max(steps)  # the full-length row's step
print(json.dumps({"ok": True, "peak_mem_gb": None if peak is None else round(peak, 2),
                  "tokens_per_s": round(tokens / seconds, 1)}))
"""


def attempt(work: Path, model: Path, length: int, checkpointing: bool) -> dict[str, Any]:
    pack = make_pack(work, length)
    out = Path(os.environ.get("SFTPACK_BENCH_RUNS", "/tmp/sftpack-bench/runs")) / f"long-{length}-{checkpointing}"
    shutil.rmtree(out, ignore_errors=True)
    # Two rows (the full-length one and the document's rest), one a step: both train.
    raw = {"model": {"path": str(model), "dtype": "bfloat16", "attention": "auto", "kernels": "auto",
                     "gradient_checkpointing": checkpointing},
           "method": {"name": "full"},
           "data": {"pack": str(pack), "batch_size": 1},
           "optim": {"lr": 1e-5, "max_steps": 2, "scheduler": "constant"},
           "output": {"dir": str(out), "report_to": [], "save_every": 0}}
    done = subprocess.run([sys.executable, "-c", ATTEMPT, json.dumps(raw)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"length": length, "ok": False, "error": tail[0][:300]}
    return {"length": length, **json.loads(lines[-1])}


def longest(work: Path, model: Path, checkpointing: bool, start: int, stop: int) -> dict[str, Any]:
    attempts = []
    length = start
    while length <= stop:
        started = time.monotonic()
        result = attempt(work, model, length, checkpointing)
        result["seconds"] = round(time.monotonic() - started, 1)
        attempts.append(result)
        print(json.dumps({"gradient_checkpointing": checkpointing, **result}), flush=True)
        if not result["ok"]:
            break
        length *= 2
    trained = [a for a in attempts if a["ok"]]
    best = trained[-1] if trained else {}
    return {"gradient_checkpointing": checkpointing, "longest": best.get("length"),
            "peak_mem_gb": best.get("peak_mem_gb"), "tokens_per_s": best.get("tokens_per_s"), "attempts": attempts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".gpu", help="bench_train_gpu.py prepare's folder")
    parser.add_argument("--scale", choices=("full", "tiny"), default="full")
    parser.add_argument("--start", type=int, default=16384)
    parser.add_argument("--stop", type=int, default=262144)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benches"))
    from bench_train_gpu import environment, make_model  # noqa: PLC0415

    model = make_model(args.work, "qwen3-4b", args.scale)
    result: dict[str, Any] = {**environment(args.work), "model": "qwen3-4b" + ("" if args.scale == "full" else "-tiny"),
                              "method": "full", "runs": []}
    for checkpointing in (False, True):
        result["runs"].append(longest(args.work, model, checkpointing, args.start, args.stop))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for run in result["runs"]:
        reached = "none" if run["longest"] is None else f"{run['longest']:,} tokens"
        capped = " (the --stop cap)" if all(a["ok"] for a in run["attempts"]) else ""
        print(f"gradient checkpointing {'on ' if run['gradient_checkpointing'] else 'off'}: longest row {reached}"
              f"{capped}, peak {run['peak_mem_gb']} GB, {run['tokens_per_s']} tokens/s")


if __name__ == "__main__":
    main()

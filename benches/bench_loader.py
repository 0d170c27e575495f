"""Loader benchmark: tokens/s through each collate mode and the latency of one 8 x 4096 batch,
from memory-mapped shards (targets: >= 10M tokens/s per process; < 5 ms per batch).

    python benches/bench_loader.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sftpack import PackDataset
from sftpack.data import collate_padded, collate_padding_free
from sftpack.preprocess import preprocess

DEMO = Path(__file__).resolve().parent.parent / "python" / "sftpack" / "assets" / "demo"


def make_pack(work: Path, rows: int) -> Path:
    """Conversations of a few hundred tokens packed into 4096-token rows (demo tokenizer)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(rows * 12):
        reply = " ".join(["blue cat"] * int(rng.integers(20, 160)))
        lines.append(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                              {"role": "assistant", "content": reply}]}))
    data = work / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    preprocess([data], DEMO, work / "pack", max_length=4096)
    return work / "pack"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = PackDataset(make_pack(Path(tmp), args.rows))
        full = [i for i in range(len(ds)) if len(ds[i]["input_ids"]) > 3900]
        print(f"loader: {len(ds):,} rows of up to 4096 tokens, batches of 8 rows, numpy output")
        for name, collate in (("padding-free", lambda rows: collate_padding_free(rows, "np")),
                              ("padded", lambda rows: collate_padded(rows, return_tensors="np"))):
            latencies, tokens = [], 0
            start = time.perf_counter()
            for b in range(0, len(full) - 7, 8):
                t = time.perf_counter()
                batch = collate([ds[i] for i in full[b : b + 8]])
                latencies.append(time.perf_counter() - t)
                tokens += int(batch["input_ids"].size)
            seconds = time.perf_counter() - start
            median = 1000 * float(np.median(latencies))
            print(f"  {name:13} {tokens / seconds / 1e6:8.1f}M tokens/s   8x4096 batch p50 {median:.2f} ms "
                  f"(p90 {1000 * float(np.percentile(latencies, 90)):.2f} ms)   targets: >= 10M tokens/s, < 5 ms")


if __name__ == "__main__":
    main()

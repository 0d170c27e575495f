"""Preprocess benchmark: one run, ratios measured side by side (the machine is shared and noisy).

Prints, for `sftpack preprocess` on a real multi-turn corpus (benches/corpus.py):
- tokens/s, MB/s and peak RSS;
- the ratio to the old floor: HF `tokenizers` 0.23 encode_batch (with offsets) on the already-rendered
  text, same threads, and to the new one: the tokenizers 1.0 engine sftpack encodes with, ids only;
- which engine encoded, and how many records needed 0.23 for their token starts (fallbacks);
- 2 threads against 1;
- the ratio to a Python pipeline of the peers' kind: datasets.map (num_proc = threads) with
  transformers apply_chat_template and per-record labels from prefix renderings;
- the cost of a trivial (identity) map function, run in the engine's loop as a stage;
- the same corpus from one Parquet file (zstd) against JSONL;
- the input bytes 4 parts of a partitioned run read together, from JSONL and from Parquet;
- the engine's own profile: start-up, and CPU seconds per stage (read, map, parse, render,
  tokenize, mask, write);
- packing efficiency at 2048 / 4096 / 8192;
- peak RSS of a tokenizer's first job (engine cache empty) and of later ones, against 300 MB;
- peak RSS at 1x and 4x the corpus size (flat = bounded memory).

    python benches/bench_preprocess.py --size-mb 10 --threads 2 [--tokenizer DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import tokenizer_dir, write_corpus  # noqa: E402
from floors import check_floors  # noqa: E402

# Times sftpack.preprocess in a fresh process (tokenizer load and input hashing included, Python
# start-up not) and reports its peak RSS. VmHWM, not ru_maxrss: the latter survives exec and so
# would report the (large) benchmark parent that forked this process.
SFTPACK = """
import json, sys, time
from sftpack.preprocess import preprocess
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

data, tokenizer, out, threads, max_length, map_fn, options = sys.argv[1:8]
start = time.perf_counter()
result = preprocess([data], tokenizer, out, threads=int(threads), max_length=int(max_length), overwrite=True,
                    map_fn=map_fn or None, **json.loads(options))
seconds = time.perf_counter() - start
counts = result["manifest"]["counts"]
print(json.dumps({"seconds": seconds, "tokens": counts["tokens"], "records": counts["records_read"],
                  "efficiency": counts["packing_efficiency"], "timing": result["timing"],
                  "engine": result["manifest"].get("tokenizer_engine"), "rss_mb": peak_mb()}))
"""

FLOOR = """
import json, sys, time
from tokenizers import Tokenizer
texts = json.load(open(sys.argv[2]))
tok = Tokenizer.from_file(sys.argv[1])
start = time.perf_counter()
encodings = tok.encode_batch(texts, add_special_tokens=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": sum(len(e.ids) for e in encodings)}))
"""

# The new floor: the tokenizers 1.0 engine sftpack encodes with, ids only, same threads.
FLOOR_V1 = """
import json, sys, time
from sftpack import Encoder
texts = json.load(open(sys.argv[2]))
encoder = Encoder(sys.argv[1])
start = time.perf_counter()
tokens = encoder._encoder.count_tokens(texts, int(sys.argv[3]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": tokens, "engine": encoder.tokenizer_engine["engine"]}))
"""

PEER = """
import json, sys, time
start = time.perf_counter()
from datasets import load_dataset
from transformers import AutoTokenizer
tokenizer_dir, data, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(tokenizer_dir)

def ids(messages, generation_prompt=False):
    if not messages:
        return []
    return tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                   return_dict=True)["input_ids"]

def encode(record):
    messages = record["messages"]
    full = ids(messages)
    labels = [-100] * len(full)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start, end = len(ids(messages[:i], True)), len(ids(messages[: i + 1]))
            labels[start:end] = full[start:end]
    return {"input_ids": full, "labels": labels}

ds = load_dataset("json", data_files=data, split="train", cache_dir=sys.argv[4])
ds = ds.map(encode, num_proc=threads if threads > 1 else None, remove_columns=ds.column_names)
tokens = sum(len(x) for x in ds["input_ids"])
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": tokens}))
"""


def write_parquet(jsonl: Path, target: Path) -> Path:
    """The same corpus as one Parquet file (zstd, 20k-row groups), as the Hub stores chat data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), target, row_group_size=20_000, compression="zstd")
    return target


def run_sftpack(data: Path, tokenizer: Path, out: Path, threads: int, max_length: int,
                map_fn: str = "", cache: str = "", **options: Any) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)  # a finished pack would make the run a no-op
    return child_json(SFTPACK, str(data), str(tokenizer), str(out), str(threads), str(max_length), map_fn,
                      json.dumps(options), threads=threads, cache=cache)


PARTS = 4
RSS_TARGET_MB = 300


def parts_read(data: Path, tokenizer: Path, work: Path, threads: int) -> dict[str, Any]:
    """The input bytes 4 parts of one job read together, against the corpus's size (1.0 = once)."""
    runs = [run_sftpack(data, tokenizer, work / f"part-{i}", threads, 4096, num_shards=PARTS, shard_index=i)
            for i in range(PARTS)]
    read = sum(run["timing"]["input_bytes_read"] for run in runs)
    return {"parts": PARTS, "bytes_read": read, "corpus_bytes": data.stat().st_size,
            "read_once": data.stat().st_size / read,
            "records": [run["records"] for run in runs]}


IDENTITY = "def identity(record):\n    return record\n"


def rendered_texts(tokenizer: Path, data: Path, target: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    texts = []
    for line in data.open():
        try:
            texts.append(tok.apply_chat_template(json.loads(line)["messages"], tokenize=False))
        except Exception:  # a conversation the template rejects is skipped by everyone
            continue
    target.write_text(json.dumps(texts))


def child_json(code: str, *args: str, threads: int, cache: str = "") -> dict[str, Any]:
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "RAYON_RS_NUM_CPUS": str(threads),
           "TOKENIZERS_PARALLELISM": "true" if threads > 1 else "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    if cache:
        env["SFTPACK_CACHE_DIR"] = cache
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tokenizer", default="qwen3",
                        help="a tokenizer under tests/data/tokenizers (or ../shared/data/tokenizers)")
    parser.add_argument("--skip-peer", action="store_true", help="skip the datasets.map pipeline")
    parser.add_argument("--skip-scaling", action="store_true", help="skip the 4x-size RSS run")
    parser.add_argument("--skip-map", action="store_true", help="skip the run with a trivial map function")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of sftpack and of the floor, alternated; the fastest of each counts")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--check-floors", action="store_true",
                        help="exit 1 when a ratio falls below its floor in benches/floors.json (CI)")
    parser.add_argument("--save-rendered", type=Path, help="keep the rendered texts (for benches/engine_v1)")
    args = parser.parse_args()
    figures: dict[str, Any] = {"threads": args.threads, "size_mb": args.size_mb, "tokenizer": args.tokenizer}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The engine's per-tokenizer cache (canonical 1.0 form, probe verdict), fresh for this run:
        # the first job on a tokenizer fills it (cold start-up), later ones read it (warm).
        os.environ["SFTPACK_CACHE_DIR"] = str(work / "engine-cache")
        tok = tokenizer_dir(work, args.tokenizer)
        data = work / "corpus.jsonl"
        figures["conversations"] = write_corpus(data, args.size_mb)
        mb = data.stat().st_size / 1e6

        rendered_texts(tok, data, work / "rendered.json")
        if args.save_rendered:
            shutil.copy(work / "rendered.json", args.save_rendered)
        (work / "identity.py").write_text(IDENTITY)
        tiny = work / "tiny.jsonl"
        tiny.write_text("".join(data.open().readlines()[:10]))
        # A tokenizer's first job fills the engine cache (its start-up and peak memory are
        # measured below, apart): the timed runs are the jobs after it, as users mostly run.
        run_sftpack(tiny, tok, work / "tiny", args.threads, 4096)
        parquet = write_parquet(data, work / "corpus.parquet")
        runs, floors, floors_v1, single, mapped, columnar = [], [], [], [], [], []
        for _ in range(args.repeat):  # alternated, so load on the shared machine hits all alike
            runs.append(run_sftpack(data, tok, work / "pack4096", args.threads, 4096))
            floors.append(child_json(FLOOR, str(tok / "tokenizer.json"), str(work / "rendered.json"),
                                     threads=args.threads))
            floors_v1.append(child_json(FLOOR_V1, str(tok), str(work / "rendered.json"), str(args.threads),
                                        threads=args.threads))
            if args.threads > 1:
                single.append(run_sftpack(data, tok, work / "pack1thread", 1, 4096))
            if not args.skip_map:
                mapped.append(run_sftpack(data, tok, work / "mapped", args.threads, 4096,
                                          f"{work / 'identity.py'}:identity"))
            columnar.append(run_sftpack(parquet, tok, work / "parquet", args.threads, 4096))
        main_run = min(runs, key=lambda r: r["seconds"])
        fastest_parquet = min(columnar, key=lambda r: r["seconds"])
        figures["parquet"] = {**fastest_parquet, "tokens_per_s": fastest_parquet["tokens"] / fastest_parquet["seconds"],
                              "ratio_to_jsonl": main_run["seconds"] / fastest_parquet["seconds"],
                              "bytes": parquet.stat().st_size}
        floor = min(floors, key=lambda r: r["seconds"])
        if mapped:
            fastest = min(mapped, key=lambda r: r["seconds"])
            figures["with_map_fn"] = {**fastest, "tokens_per_s": fastest["tokens"] / fastest["seconds"],
                                      "ratio_to_unmapped": main_run["seconds"] / fastest["seconds"]}
        # Fixed start-up (tokenizer load, template probes): a run on a handful of conversations,
        # with the engine cache filled (warm) and without one (cold: a tokenizer's first job).
        warm = [run_sftpack(tiny, tok, work / "tiny", args.threads, 4096)["timing"] for _ in range(2)]
        setup = min(timing["setup_s"] for timing in warm)
        figures["engine_build_seconds"] = min(timing.get("engine_build_s", 0.0) for timing in warm)
        cold = [run_sftpack(tiny, tok, work / "tiny", args.threads, 4096, cache="off") for _ in range(2)]
        figures["cold_setup_seconds"] = min(run["timing"]["setup_s"] for run in cold)
        figures["cold_engine_build_seconds"] = min(run["timing"].get("engine_build_s", 0.0) for run in cold)
        figures["cold_rss_mb"] = min(run["rss_mb"] for run in cold)
        # A tokenizer's first job on the whole corpus: the most memory a run takes.
        first_job = run_sftpack(data, tok, work / "first-job", args.threads, 4096, cache="off")
        figures["memory"] = {"first_job_rss_mb": first_job["rss_mb"], "rss_mb": main_run["rss_mb"],
                             "target_mb": RSS_TARGET_MB,
                             "ratio_to_target": RSS_TARGET_MB / max(first_job["rss_mb"], main_run["rss_mb"])}
        sft_rate = main_run["tokens"] / main_run["seconds"]
        # Steady state from the run's own clock: its wall time less its start-up (the tiny run's
        # figure, taken in another process, can exceed a short run's whole time).
        timing = main_run["timing"]
        steady_rate = main_run["tokens"] / max(timing["wall_s"] - timing["setup_s"], 1e-3)
        figures["sftpack"] = {**main_run, "tokens_per_s": sft_rate, "mb_per_s": mb / main_run["seconds"],
                              "setup_seconds": setup, "steady_tokens_per_s": steady_rate}
        figures["floor"] = {**floor, "tokens_per_s": floor["tokens"] / floor["seconds"]}
        figures["ratio_to_floor"] = sft_rate / figures["floor"]["tokens_per_s"]
        figures["steady_ratio_to_floor"] = steady_rate / figures["floor"]["tokens_per_s"]
        floor_v1 = min(floors_v1, key=lambda r: r["seconds"])
        figures["floor_v1"] = {**floor_v1, "tokens_per_s": floor_v1["tokens"] / floor_v1["seconds"]}
        figures["ratio_to_floor_v1"] = sft_rate / figures["floor_v1"]["tokens_per_s"]
        if single:
            one = min(single, key=lambda r: r["seconds"])
            figures["one_thread"] = {**one, "tokens_per_s": one["tokens"] / one["seconds"]}
            figures["thread_scaling"] = one["seconds"] / main_run["seconds"]
            # Past start-up (one thread has no second one to hash the inputs on beside the load).
            steady = lambda run: run["timing"]["wall_s"] - run["timing"]["setup_s"]  # noqa: E731
            figures["steady_thread_scaling"] = steady(one) / max(steady(main_run), 1e-3)

        if not args.skip_peer:
            cache = str(work / "hf-cache")
            peer = child_json(PEER, str(tok), str(data), str(args.threads), cache, threads=args.threads)
            figures["peer_python"] = {**peer, "tokens_per_s": peer["tokens"] / peer["seconds"]}
            figures["ratio_to_peer"] = sft_rate / figures["peer_python"]["tokens_per_s"]

        figures["packing_efficiency"] = {"4096": main_run["efficiency"]}
        for length in (2048, 8192):
            run = run_sftpack(data, tok, work / f"pack{length}", args.threads, length)
            figures["packing_efficiency"][str(length)] = run["efficiency"]

        figures["parts"] = {"jsonl": parts_read(data, tok, work / "parts-jsonl", args.threads),
                            "parquet": parts_read(parquet, tok, work / "parts-parquet", args.threads)}

        if not args.skip_scaling:
            big = work / "corpus4x.jsonl"
            write_corpus(big, 4 * args.size_mb)
            figures["rss_mb_4x"] = run_sftpack(big, tok, work / "pack4x", args.threads, 4096)["rss_mb"]
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return check_floors("bench_preprocess", figures) if args.check_floors else 0


def report(f: dict[str, Any]) -> None:
    s = f["sftpack"]
    print(f"sftpack preprocess, {f['size_mb']:.0f} MB real multi-turn corpus ({f['conversations']:,} conversations), "
          f"{f['tokenizer']} tokenizer, {f['threads']} threads")
    print(f"  sftpack     {s['tokens_per_s']:>12,.0f} tokens/s  {s['mb_per_s']:6.2f} MB/s"
          f"  peak RSS {s['rss_mb']:,.0f} MB"
          f"  ({s['tokens']:,} tokens in {s['seconds']:.2f}s, tokenizer load and input hashing included)")
    if s.get("timing", {}).get("input_bytes_read"):
        print(f"              read {s['timing']['input_bytes_read'] / (f['size_mb'] * 1e6):.2f}x the corpus's bytes "
              "(1.00x = each byte read once)")
    print(f"              {s['steady_tokens_per_s']:>12,.0f} tokens/s  without the run's "
          f"{s['timing']['setup_s']:.2f}s start-up")
    print(f"              start-up (until records flow) {s['setup_seconds']:.2f}s with the engine cache filled, "
          f"{f['cold_setup_seconds']:.2f}s without it (a tokenizer's first job; target <= 0.2); "
          f"a first job peaks at {f['cold_rss_mb']:,.0f} MB RSS on 10 conversations")
    print(f"              beside it the 1.0 engine builds on its own thread: {f['engine_build_seconds']:.2f}s with the "
          f"cache filled, {f['cold_engine_build_seconds']:.2f}s without it")
    timing = s.get("timing")
    if timing:
        stages = ", ".join(f"{name} {seconds:.2f}" for name, seconds in timing["stages"].items())
        print(f"              stages (CPU s over all threads): {stages}; start-up {timing['setup_s']:.2f}s, "
              f"wall {timing['wall_s']:.2f}s")
        print(f"              the 1.0 engine built in {timing.get('engine_build_s', 0):.2f}s on its own thread, "
              "beside the start-up and the first batches' rendering; tokenizing waited "
              f"{timing['stages'].get('engine_wait', 0):.2f}s for it")
    engine = s.get("engine") or {}
    if engine:
        note = f" ({engine['note']})" if engine.get("note") else ""
        print(f"              engine {engine['engine']}{note}: token starts from tokenizers 0.23 for "
              f"{engine['starts_from_old_engine']:,} of {engine['texts_with_starts']:,} records (fallbacks)")
    if "thread_scaling" in f:
        print(f"              1 thread {f['one_thread']['tokens_per_s']:,.0f} tokens/s -> {f['threads']} threads are "
              f"{f['thread_scaling']:.2f}x one end to end, {f['steady_thread_scaling']:.2f}x past start-up "
              "(target >= 1.8)")
    print(f"  floor 0.23  {f['floor']['tokens_per_s']:>12,.0f} tokens/s  (tokenizers 0.23 encode_batch with offsets on"
          f" rendered text)  -> ratio {f['ratio_to_floor']:.2f} end to end, {f['steady_ratio_to_floor']:.2f} without"
          " start-up (target >= 4)")
    v1 = f["floor_v1"]
    print(f"  floor 1.0   {v1['tokens_per_s']:>12,.0f} tokens/s  ({v1['engine']} ids only on rendered text)"
          f"  -> ratio {f['ratio_to_floor_v1']:.2f} end to end")
    if "parquet" in f:
        pq_run = f["parquet"]
        print(f"  parquet     {pq_run['tokens_per_s']:>12,.0f} tokens/s  the same corpus as one zstd Parquet file "
              f"({pq_run['bytes'] / 1e6:.1f} MB, peak RSS {pq_run['rss_mb']:,.0f} MB)  -> "
              f"{pq_run['ratio_to_jsonl']:.2f}x the speed from JSONL")
    if "with_map_fn" in f:
        m = f["with_map_fn"]
        print(f"  map fn      {m['tokens_per_s']:>12,.0f} tokens/s  with an identity map function in the loop"
              f"  -> {m['ratio_to_unmapped']:.2f}x the speed without one")
    if "peer_python" in f:
        print(f"  peer python {f['peer_python']['tokens_per_s']:>12,.0f} tokens/s  (datasets.map + apply_chat_template)"
              f"  -> sftpack is {f['ratio_to_peer']:.1f}x (target >= 5)")
    eff = f["packing_efficiency"]
    listed = ", ".join(f"{k}: {100 * v:.2f}%" for k, v in eff.items())
    print(f"  packing efficiency {listed} (target >= 99.5% at 4096)")
    for name, parts in f.get("parts", {}).items():
        print(f"  {parts['parts']} parts    of the {name} corpus read {1 / parts['read_once']:.3f}x its bytes together "
              f"(target <= 1.25; records per part {parts['records']})")
    if "memory" in f:
        mem = f["memory"]
        print(f"  memory      peak RSS {mem['first_job_rss_mb']:,.0f} MB for a tokenizer's first job on the corpus, "
              f"{mem['rss_mb']:,.0f} MB for later ones -> {mem['ratio_to_target']:.2f}x within the "
              f"{mem['target_mb']} MB target (>= 1 meets it)")
    if "rss_mb_4x" in f:
        print(f"  peak RSS at 1x {s['rss_mb']:,.0f} MB, at 4x {f['rss_mb_4x']:,.0f} MB (flat = bounded)")


if __name__ == "__main__":
    sys.exit(main())

"""sftpack preprocess: the whole corpus to packed, memory-mappable Arrow shards in one pass."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..preprocess import run_preprocess
from ..ray_engine import parts_dir
from ..settings import (
    JOB_OPTIONS,
    PREPROCESS_OPTIONS,
    PreprocessSettings,
    default,
    preprocess_settings,
)
from ._common import add_engine_arguments

HELP = "tokenize, mask and pack a dataset into Arrow shards (resumable, deterministic)"

# Settings a YAML config may hold (the flags' names, with - or _): those of sftpack.settings.
CONFIG_KEYS = {"data", "tokenizer", "out", *JOB_OPTIONS, *PREPROCESS_OPTIONS} - {"template_source"}


def register(sub: Any) -> None:
    parser = sub.add_parser("preprocess", help=HELP, description=HELP + ".")
    add_engine_arguments(parser, data_required=False, tokenizer_required=False)
    parser.add_argument("--out", metavar="DIR", help="output directory")
    parser.add_argument("--config", metavar="YAML", type=Path,
                        help="read these settings from a YAML file, under the flags' names (flags given too win)")
    parser.add_argument("--no-pack", dest="pack", action="store_false", default=None,
                        help="one conversation per row, in input order")
    parser.add_argument("--seed", type=int,
                        help=f"seed of the packed row order and the validation split (default {default('seed')})")
    parser.add_argument("--val-size", metavar="F|N",
                        help="hold out a validation pack in OUT/validation: each record with probability F (0.05), "
                             "or exactly N records (500, which counts the records first); never in the training pack")
    parser.add_argument("--window", type=int, metavar="N",
                        help=f"documents per packing window (default {default('window')})")
    parser.add_argument("--shard-size-mb", type=int, metavar="MB",
                        help=f"shard size limit (default {default('shard_size_mb')})")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace an output made from other inputs or settings")
    parser.add_argument("--num-shards", type=int, metavar="N",
                        help="prepare one of N parts of the records (for Slurm arrays, Kubernetes jobs); "
                             "`sftpack pack merge` joins the parts")
    parser.add_argument("--shard-index", type=int, metavar="I",
                        help="which part this run prepares, 0 to N-1 (with --num-shards)")
    parser.add_argument("--engine", choices=("local", "ray"),
                        help="where the job runs: here (local, default) or on Ray actors (ray; pip install "
                             "'sftpack[ray]'): the same documents either way")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="the Ray cluster to join (ray://head:10001, or auto); default: a local Ray instance")
    parser.add_argument("--ray-actors", type=int, metavar="N",
                        help="Ray actors (default: the cluster's CPUs / --ray-cpus-per-actor)")
    parser.add_argument("--ray-cpus-per-actor", type=int, metavar="N",
                        help="CPUs (engine threads) per Ray actor (default 1)")
    parser.add_argument("--ray-parts", type=int, metavar="N",
                        help="parts the corpus is split into (default: one per actor; more gives finer resume "
                             "and balancing)")
    parser.set_defaults(run=run)


def load_config(path: Path) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(raw).__name__}")
    settings = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(settings) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {unknown}\nhint: known settings are {sorted(CONFIG_KEYS)}")
    if isinstance(settings.get("data"), str):
        settings["data"] = [settings["data"]]
    return settings


def merged_settings(args: argparse.Namespace) -> PreprocessSettings:
    """The YAML file's settings with the flags given on top, validated together."""
    settings = load_config(args.config) if args.config else {}
    for key in CONFIG_KEYS:
        value = getattr(args, key, None)
        if value not in (None, []):
            settings[key] = value
    missing = [f"--{k}" for k in ("tokenizer", "out") if not settings.get(k)]
    if not settings.get("data"):
        missing.insert(0, "DATA")
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}\nhint: give them as arguments or in --config")
    data, tokenizer, out = settings.pop("data"), settings.pop("tokenizer"), settings.pop("out")
    return preprocess_settings(data, tokenizer, out, **settings)


class ProgressPrinter:
    """A one-line progress bar on a terminal, a log line every 10 s otherwise."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_log = self.start

    def __call__(self, p: dict[str, Any]) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        if "parts" in p:  # --engine ray reports parts as they finish
            self.show(f"{p['parts_done']}/{p['parts']} parts, {p['records']:,} records, {p['tokens']:,} tokens")
            return
        mb_s = p["bytes_read"] / elapsed / 1e6
        fraction = p["bytes_read"] / p["bytes_total"] if p["bytes_total"] else 0.0
        eta = elapsed * (1 - fraction) / fraction if 0 < fraction <= 1 else 0.0
        line = (f"{p['records']:,} records, {p['tokens']:,} tokens ({p['tokens'] / elapsed:,.0f}/s), "
                f"{mb_s:.1f} MB/s, {100 * min(fraction, 1):.0f}%, ETA {eta:.0f}s")
        self.show(line)

    def show(self, line: str) -> None:
        if self.tty:
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
        elif time.monotonic() - self.last_log >= 10:
            self.last_log = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print("", file=sys.stderr)


def print_summary(result: dict[str, Any], seconds: float) -> None:
    manifest = result["manifest"]
    counts = manifest["counts"]
    print(f"{result['status']}: {result['out']} ({seconds:.1f}s)")
    ray = result.get("ray")
    if ray:
        nodes = len({part["node"] for part in ray["parts"]})
        print(f"  on Ray: {len(ray['parts'])} parts by {ray['actors']} actors of {ray['cpus_per_actor']} CPU(s) on "
              f"{nodes} node(s); parts in {parts_dir(Path(result['out']))}")
    partition = manifest["config"].get("partition")
    if partition:
        print(f"  part {partition['index']} of {partition['count']} (the work units in share {partition['index']} "
              f"of the input bytes); join all parts with `sftpack pack merge`")
    validation = manifest.get("validation")
    if validation:
        held_out = validation["records"]
        print(f"  records read {counts['records_read'] + held_out:,} = training pack {counts['records_read']:,} "
              f"+ validation split {held_out:,}; in the training pack:")
    print(f"  records read {counts['records_read']:,} = packed {counts['packed']:,} "
          f"+ rejected {counts['rejected']:,} + dropped {counts['dropped']:,}")
    for kind, n in {**counts["rejected_by_kind"], **counts["dropped_by_reason"]}.items():
        print(f"    {kind}: {n:,}")
    if counts["rejected"] or counts["dropped"]:
        print(f"  every record not packed is in {Path(result['out']) / 'rejects.jsonl'}, with its reason")
    print(f"  tokens {counts['tokens']:,} ({100 * counts['trained_tokens'] / max(counts['tokens'], 1):.1f}% trained)"
          f" in {counts['rows']:,} rows of max {manifest['max_length']}; "
          f"packing efficiency {100 * counts['packing_efficiency']:.2f}%")
    shards = manifest["shards"]
    print(f"  {len(shards)} shard{'s' if len(shards) != 1 else ''}, truncated {counts['truncated']:,}")
    engine = manifest.get("tokenizer_engine")
    if engine:
        print(f"  tokenizer engine {engine['engine']}: token starts from tokenizers 0.23 for "
              f"{engine['starts_from_old_engine']:,} of {engine['texts_with_starts']:,} records"
              + (f" ({engine['note']})" if engine["note"] else ""))
    if validation:
        print(f"  validation split: {validation['records']:,} records held out in "
              f"{Path(result['out']) / validation['path']} ({validation['documents']:,} packed, "
              f"{validation['tokens']:,} tokens in {validation['rows']:,} rows)")


def run(args: argparse.Namespace) -> int:
    settings = merged_settings(args)
    printer = ProgressPrinter()
    started = time.monotonic()
    try:
        result = run_preprocess(settings, progress=printer)
    finally:
        printer.done()
    print_summary(result, time.monotonic() - started)
    return 0

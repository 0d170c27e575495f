"""sftpack merge BASE ADAPTER OUT: fold a LoRA adapter into its base model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "merge a LoRA adapter into its base model (a plain Hugging Face model, dtype kept)"


def register(sub: Any) -> None:
    parser = sub.add_parser("merge", help=HELP, description=HELP + ".")
    parser.add_argument("base", type=Path, help="the base model directory")
    parser.add_argument("adapter", type=Path, help="the adapter directory from sftpack train")
    parser.add_argument("out", type=Path, help="where to write the merged model")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    parser.add_argument("--original-base", action="store_true",
                        help="for a QLoRA adapter: fold it into the base's original weights, not into the weights "
                             "rounded to 4 bits that it was trained and evaluated on (the default)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..lifecycle import merge  # noqa: PLC0415 (needs torch and peft)

    out = merge(args.base, args.adapter, args.out, args.max_shard_size, original_base=args.original_base)
    print(f"merged model written to {out}")
    return 0

"""Arguments and output helpers shared by several commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from ..settings import DEFAULT_MAX_LENGTH, FORMATS, OVERLONG


def add_engine_arguments(
    parser: argparse.ArgumentParser, data_required: bool = True, tokenizer_required: bool = True
) -> None:
    """DATA, --tokenizer, --template, --format, --max-length, --overlong, --threads."""
    parser.add_argument("data", nargs="+" if data_required else "*", metavar="DATA",
                        help="JSON/JSONL files (optionally .gz/.zst) or directories of them")
    parser.add_argument("--tokenizer", required=tokenizer_required, metavar="DIR",
                        help="Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json)")
    parser.add_argument("--template", metavar="T",
                        help="built-in XTuner template name (see `sftpack templates list`) or a .jinja "
                             "file; default: the tokenizer's own chat template")
    parser.add_argument("--format", choices=FORMATS,
                        help="dataset format; default: detected per file")
    parser.add_argument("--max-length", type=int, metavar="N",
                        help="longest conversation in tokens (preprocess: the row length, default "
                             f"{DEFAULT_MAX_LENGTH})")
    parser.add_argument("--overlong", choices=OVERLONG,
                        help="conversations over --max-length: drop (skip, counted in rejects; default), "
                             "truncate (keep the first max-length tokens) or error (preprocess stops, naming "
                             "file and line, and writes nothing)")
    parser.add_argument("--threads", type=int, metavar="N", help="worker threads (default: all cores)")
    parser.add_argument("--template-kwargs", metavar="JSON", type=json.loads, default=None,
                        help='extra template variables, e.g. \'{"enable_thinking": false}\'')
    parser.add_argument("--map-fn", metavar="SPEC",
                        help="map records of another shape first: module:function, file.py:function, or a "
                             "built-in (openorca, alpaca_zh, prompt_completion, query_response)")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "template": args.template,
        "format": args.format,
        "max_length": args.max_length,
        "overlong": args.overlong,
        "threads": args.threads,
        "template_kwargs": args.template_kwargs,
        "map_fn": args.map_fn,
    }


def use_color(stream: TextIO = sys.stdout) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def where(example: dict[str, Any]) -> str:
    place = f"{example['file']}:{example['line']}"
    if example.get("index") is not None:
        place += f" (element {example['index']})"
    return place

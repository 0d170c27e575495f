"""Arguments and output helpers shared by several commands."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, TextIO

from ..settings import DEFAULT_MAX_LENGTH, FORMATS, JOB_OPTIONS, OVERLONG, PREPROCESS_OPTIONS


def add_engine_arguments(
    parser: argparse.ArgumentParser, data_required: bool = True, tokenizer_required: bool = True
) -> None:
    """DATA, --tokenizer, --template, --format, --max-length, --overlong, --threads."""
    parser.add_argument("data", nargs="+" if data_required else "*", metavar="DATA",
                        help="JSON/JSONL files (optionally .gz/.zst), Parquet or Arrow files, or directories of them "
                             "(a `datasets` save_to_disk folder too); local, or s3:// gs:// az:// https:// "
                             "objects and prefixes")
    parser.add_argument("--tokenizer", required=tokenizer_required, metavar="DIR",
                        help="Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json)")
    parser.add_argument("--template", metavar="T",
                        help="built-in XTuner template name (see `sftpack templates list`) or a .jinja "
                             "file; default: the tokenizer's own chat template")
    parser.add_argument("--format", choices=FORMATS,
                        help="dataset format; default: detected per file")
    parser.add_argument("--max-length", type=int, metavar="N",
                        help=f"longest conversation in tokens (default {DEFAULT_MAX_LENGTH}); preprocess packs rows "
                             "of this length, check and inspect count longer records as too long")
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
    """The job settings the parsed flags give (flags are the settings' names with dashes); the
    typed settings (sftpack.settings) validate them."""
    return {name: getattr(args, name) for name in JOB_OPTIONS if hasattr(args, name)}


# Messages and hints name settings in backticks, as YAML and the Python API spell them
# (`max_length`, `overlong: truncate`); on the command line the same settings are flags.
SETTING = re.compile(r"`([a-z_]+)(?:: ([^`\n]+))?`")
FLAG_SETTINGS = frozenset({*JOB_OPTIONS, *PREPROCESS_OPTIONS, "out", "tokenizer"})


def as_flags(text: str | None) -> str | None:
    """``text`` with each setting it names spelled as its flag: `max_length` -> --max-length,
    `overlong: truncate` -> --overlong truncate, `overwrite: true` -> --overwrite, `pack: false`
    -> --no-pack."""
    if text is None:
        return None

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if name not in FLAG_SETTINGS:
            return match.group(0)
        dashed = name.replace("_", "-")
        if value is None or value == "true":
            return f"--{dashed}"
        return f"--no-{dashed}" if value == "false" else f"--{dashed} {value}"

    return SETTING.sub(flag, text)


def use_color(stream: TextIO = sys.stdout) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def where(example: dict[str, Any]) -> str:
    place = f"{example['file']}:{example['line']}"
    if example.get("index") is not None:
        place += f" (element {example['index']})"
    return place

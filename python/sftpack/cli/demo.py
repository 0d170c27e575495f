"""sftpack demo: check and inspect the bundled sample dataset with the bundled tiny tokenizer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..jobs import check, samples
from ._common import use_color
from .check import print_report
from .inspect import render_runs

HELP = "run check and inspect on the bundled sample chat dataset (no downloads)"
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help=HELP, description=HELP + ".")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    data, tokenizer = ASSETS / "chat.jsonl", ASSETS
    print(f"$ sftpack check {data} --tokenizer {tokenizer}")
    print("(the sample holds two broken records on purpose)\n")
    print_report(check([data], tokenizer), examples=3)
    print(f"\n$ sftpack inspect {data} --tokenizer {tokenizer} -n 1")
    for sample in samples([data], tokenizer, 1):
        print(render_runs([(t, bool(m)) for t, m in sample["runs"]], use_color()))
    return 0

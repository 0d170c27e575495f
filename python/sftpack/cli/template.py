"""sftpack template check: sftpack's training ids against the tokenizer's own chat template."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

HELP = ("compare sftpack's training rendering with the tokenizer's own chat template, token by token, and check "
        "that chat prompts continue the training ids")

SAMPLES = [
    {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"}]},
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},
                  {"role": "assistant", "content": "6"}]},
]


def register(sub: Any) -> None:
    parser = sub.add_parser("template", help="chat template tools", description="Chat template tools.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help=HELP, description=HELP + ". A record passes when its training ids "
                               "equal the tokenizer's template's and, before every trained reply, the generation "
                               "prompt that chat and samples render is the training ids up to that reply. Exit 1 "
                               "if any record does not.")
    check.add_argument("data", nargs="?", type=Path, help="a JSONL of OpenAI-format records (default: samples)")
    check.add_argument("--tokenizer", required=True, type=Path)
    check.add_argument("--template", help="the template to check (default: the tokenizer's own)")
    check.add_argument("-n", type=int, default=100, help="records to compare (default 100)")
    check.add_argument("--template-kwargs", metavar="JSON", type=json.loads, default=None,
                       help='extra template variables, e.g. \'{"enable_thinking": false}\'')
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..lifecycle import template_check  # noqa: PLC0415 (needs transformers)

    if args.data:
        with args.data.open() as f:
            records = [json.loads(line) for line in itertools.islice((x for x in f if x.strip()), args.n)]
    else:
        records = SAMPLES
    results = template_check(args.tokenizer, args.template, records, args.template_kwargs)
    differing = [r for r in results if r["status"] != "identical"]
    for r in differing:
        if r["status"] == "differs":
            print(f"record {r['record']}: differs at token {r['position']}\n"
                  f"    sftpack:   {r['sftpack']!r}\n    tokenizer: {r['tokenizer']!r}")
        else:
            print(f"record {r['record']}: {r['status']}: {r['detail']}")
    same = len(results) - len(differing)
    print(f"{same}/{len(results)} records token-identical to the tokenizer's chat template, with generation prompts "
          "that continue the training ids")
    return 0 if not differing else 1

"""sftpack template check: sftpack's training ids against the tokenizer's own chat template."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from ..settings import FORMATS

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
                               "prompt that chat and samples render is the training ids up to that reply. Records "
                               "are read as preprocess reads them (any format, --format, --map-fn), each named by "
                               "file and line. Exit 1 if any record does not pass.")
    check.add_argument("data", nargs="*", metavar="DATA",
                       help="dataset files or directories, any format preprocess reads (default: two samples)")
    check.add_argument("--tokenizer", required=True, type=Path, metavar="DIR")
    check.add_argument("--template", metavar="T", help="the template to check (default: the tokenizer's own)")
    check.add_argument("-n", type=int, default=100, metavar="N", help="records to compare (default 100)")
    check.add_argument("--template-kwargs", metavar="JSON", type=json.loads, default=None,
                       help='extra template variables, e.g. \'{"enable_thinking": false}\'')
    check.add_argument("--format", choices=FORMATS, help="dataset format; default: detected per file")
    check.add_argument("--map-fn", metavar="SPEC", help="map records of another shape first (as preprocess)")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..lifecycle import template_check  # noqa: PLC0415 (needs transformers)

    with tempfile.TemporaryDirectory() as folder:
        data = args.data
        if not data:
            data = [Path(folder) / "samples.jsonl"]
            data[0].write_text("".join(json.dumps(r) + "\n" for r in SAMPLES))
        results = template_check(args.tokenizer, data, args.template, args.template_kwargs, args.n, args.format,
                                 args.map_fn)
    differing = [r for r in results if r["status"] != "identical"]
    for r in differing:
        if r["status"] == "differs":
            print(f"{r['where']}: differs at token {r['position']}\n"
                  f"    sftpack:   {r['sftpack']!r}\n    tokenizer: {r['tokenizer']!r}")
        else:
            print(f"{r['where']}: {r['status']}: {r['detail']}")
    same = len(results) - len(differing)
    print(f"{same}/{len(results)} records token-identical to the tokenizer's chat template, with generation prompts "
          "that continue the training ids")
    return 0 if not differing else 1

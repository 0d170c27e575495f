"""sftpack check: validate every record and report problems and token statistics."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..jobs import check
from ._common import add_engine_arguments, as_flags, engine_options, where

HELP = "validate every record of a dataset; exit 0 only if all are usable"


def register(sub: Any) -> None:
    parser = sub.add_parser("check", help=HELP, description=HELP + ".")
    add_engine_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    parser.add_argument("--examples", type=int, default=3, metavar="N",
                        help="examples shown per problem kind (default 3)")
    parser.set_defaults(run=run)


def print_kinds(title: str, kinds: dict[str, Any], examples: int) -> None:
    if not kinds:
        return
    print(f"{title}:")
    for kind, entry in sorted(kinds.items(), key=lambda kv: -kv[1]["count"]):
        print(f"  {kind}: {entry['count']:,}")
        for example in entry["examples"][:examples]:
            path = f" at {example['path']}" if example.get("path") else ""
            print(f"    {where(example)}{path}: {example['message']}")
            if example.get("hint"):
                print(f"      hint: {as_flags(example['hint'])}")


def print_report(report: dict[str, Any], examples: int) -> None:
    files = len(report["files"])
    print(f"checked {report['records']:,} records in {files} file{'s' if files != 1 else ''} "
          f"(template: {report['template']})")
    for entry in report["files"]:
        fmt = entry["format"] or "unknown"
        print(f"  {entry['path']}: {entry['records']:,} records, format {fmt}")
    print(f"  usable   {report['encoded']:,}")
    print(f"  rejected {report['rejected']:,}  (invalid records)")
    print(f"  dropped  {report['dropped']:,}  (valid, but nothing to train on or too long)")
    if report["truncated"]:
        print(f"  truncated {report['truncated']:,}")
    print_kinds("problems", report["problems"], examples)
    print_kinds("dropped", report["drops"], examples)
    tokens = report["tokens"]
    if tokens:
        share = 100.0 * report["trained_tokens"] / tokens
        print(f"tokens: {tokens:,} in the usable records ({share:.1f}% trained)")
    if report["encoded"] + report["dropped"]:
        lengths = report["lengths"]
        print(f"tokens per valid record, before truncation: p50 {lengths['p50']:,}, p90 {lengths['p90']:,}, "
              f"p99 {lengths['p99']:,}, max {lengths['max']:,}")
    too_long = report["drops"].get("too_long", {}).get("count", 0)
    if report["max_length"]:
        print(f"over max length ({report['max_length']:,}): {too_long + report['truncated']:,}")


def run(args: argparse.Namespace) -> int:
    report = check(args.data, args.tokenizer, **engine_options(args))
    report["examples_shown"] = args.examples
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_report(report, args.examples)
    ok = report["rejected"] == 0 and report["dropped"] == 0 and report["records"] > 0
    return 0 if ok else 1

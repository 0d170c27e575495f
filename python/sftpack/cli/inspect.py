"""sftpack inspect: show how records are tokenized and which tokens are trained."""

from __future__ import annotations

import argparse
from typing import Any

from ..jobs import samples
from ._common import add_engine_arguments, engine_options, use_color, where

HELP = "show decoded samples with their trained tokens marked"
GREEN, DIM, RESET = "\x1b[32m", "\x1b[2m", "\x1b[0m"


def register(sub: Any) -> None:
    parser = sub.add_parser("inspect", help=HELP, description=HELP + ".")
    add_engine_arguments(parser)
    parser.add_argument("-n", type=int, default=3, metavar="N", help="records to show (default 3)")
    parser.set_defaults(run=run)


def render_runs(runs: list[tuple[str, bool]], color: bool) -> str:
    parts = []
    for text, trained in runs:
        if color:
            parts.append(f"{GREEN}{text}{RESET}" if trained else f"{DIM}{text}{RESET}")
        else:
            parts.append(f"{{+{text}+}}" if trained else text)
    return "".join(parts)


def run(args: argparse.Namespace) -> int:
    color = use_color()
    legend = "trained tokens in green, others dimmed" if color else "trained tokens inside {+ +}"
    print(f"legend: {legend}")
    for sample in samples(args.data, args.tokenizer, args.n, **engine_options(args)):
        header = f"── {where(sample)}"
        if sample.get("problems"):
            print(header + ": not usable")
            for problem in sample["problems"]:
                print(f"   {problem['kind']}: {problem['message']}")
            continue
        untrained = sample["tokens"] - sample["trained_tokens"]
        print(f"{header}: {sample['tokens']:,} tokens, {sample['trained_tokens']:,} trained, "
              f"{untrained:,} not trained")
        print(render_runs([(t, bool(m)) for t, m in sample["runs"]], color))
        if sample.get("roles"):
            roles = sample["roles"].items()
            per_role = ", ".join(f"{role} {n:,} ({trained:,} trained)" for role, (n, trained) in roles)
            print(f"   tokens per role: {per_role}")
    return 0

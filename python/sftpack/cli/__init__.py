"""The ``sftpack`` command line. Logs and errors go to stderr, data (``--json``) to stdout.

Exit codes: 0 success, 1 data or configuration problems, 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import __version__
from ..errors import SftpackError
from . import (
    chat,
    check,
    configs,
    convert,
    convert_tokenizer,
    demo,
    inspect,
    merge,
    pack,
    preprocess,
    quickstart,
    studio,
    template,
    templates,
    train,
)
from ._common import as_flags

COMMANDS = [check, inspect, preprocess, pack, train, quickstart, configs, convert, merge, chat, template, templates,
            convert_tokenizer, demo, studio]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftpack",
        description="Exact, fast SFT data preparation for LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"sftpack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def report_error(error: SftpackError | OSError) -> None:
    """Every command reports a failure the same way, on stderr: ``error:`` what happened and
    where, then ``hint:`` how to fix it when sftpack knows."""
    if isinstance(error, SftpackError):
        print(f"error: {as_flags(error.message)}", file=sys.stderr)
        if error.hint:
            print(f"hint: {as_flags(error.hint)}", file=sys.stderr)
    else:
        print(f"error: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (SftpackError, OSError) as error:
        if args.debug:
            raise
        report_error(error)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

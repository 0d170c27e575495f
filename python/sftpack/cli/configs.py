"""sftpack configs list [-p PATTERN] | copy NAME DIR: the ready recipes (XTuner's list-cfg /
copy-cfg)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError

HELP = "list or copy the ready training recipes"
RECIPES = Path(__file__).resolve().parent.parent / "configs"


def register(sub: Any) -> None:
    parser = sub.add_parser("configs", help=HELP, description=HELP + ".")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list recipe names")
    listing.add_argument("-p", "--pattern", default="", help="only names containing this")
    listing.set_defaults(run=run_list)
    copy = actions.add_parser("copy", help="copy a recipe to a directory to edit it")
    copy.add_argument("name")
    copy.add_argument("directory", type=Path)
    copy.set_defaults(run=run_copy)


def names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def run_list(args: argparse.Namespace) -> int:
    for name in names():
        if args.pattern.lower() in name.lower():
            summary = (RECIPES / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
            print(f"{name:24} {summary}")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    source = RECIPES / f"{args.name.removesuffix('.yaml')}.yaml"
    if not source.is_file():
        known = ", ".join(names())
        raise ConfigError(f"no recipe named {args.name!r}\nhint: `sftpack configs list` shows them: {known}")
    args.directory.mkdir(parents=True, exist_ok=True)
    target = args.directory / source.name
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or copy elsewhere")
    shutil.copy(source, target)
    print(f"copied to {target}")
    return 0

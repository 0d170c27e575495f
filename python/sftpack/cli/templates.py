"""sftpack templates list | show NAME: the built-in XTuner prompt templates."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import _core
from ..errors import ConfigError

HELP = "list or show the built-in XTuner prompt templates"


def register(sub: Any) -> None:
    parser = sub.add_parser("templates", help=HELP, description=HELP + ".")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list template names").set_defaults(run=run_list)
    show = actions.add_parser("show", help="show one template's fields")
    show.add_argument("name")
    show.set_defaults(run=run_show)


def table() -> dict[str, Any]:
    out: dict[str, Any] = json.loads(_core.builtin_templates())
    return out


def run_list(args: argparse.Namespace) -> int:
    for name, t in table().items():
        stop = ", ".join(t["stop_words"]) or "-"
        print(f"{name:16} stop words: {stop}")
    print("\nWithout --template, the tokenizer's own Jinja chat template is used; "
          "--template FILE.jinja uses yours.")
    return 0


def run_show(args: argparse.Namespace) -> int:
    templates = table()
    if args.name not in templates:
        raise ConfigError(f"unknown template \"{args.name}\"", hint="`sftpack templates list` shows the names")
    for field, value in templates[args.name].items():
        print(f"{field}: {json.dumps(value, ensure_ascii=False)}")
    return 0

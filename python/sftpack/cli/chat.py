"""sftpack chat MODEL: talk to a model with the template it was trained with."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "chat with a model (interactive, or one-shot with --prompt) using its training template"


def register(sub: Any) -> None:
    parser = sub.add_parser("chat", help=HELP, description=HELP + ".")
    parser.add_argument("model", type=Path, help="a model directory (the base model when --adapter is given)")
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter directory from sftpack train")
    parser.add_argument("--template", help="override the training template (tokenizer, an XTuner name, a .jinja)")
    parser.add_argument("--system", help="system message")
    parser.add_argument("--prompt", help="answer this one prompt and exit (for scripts)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..lifecycle import ChatSession  # noqa: PLC0415 (needs torch)

    session = ChatSession(args.model, args.adapter, args.template, args.system)
    if args.prompt is not None:
        print(session.reply(args.prompt, args.max_new_tokens))
        return 0
    print(f"chatting with {args.model} (template {session.template_name}); an empty line or Ctrl-D quits")
    while True:
        try:
            user = input(">>> ").strip()
        except EOFError:
            break
        if not user:
            break
        session.reply(user, args.max_new_tokens, stream=True)
    return 0

"""sftpack train RECIPE.yaml [key=value ...]: LoRA, QLoRA or full SFT on a pack."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "fine-tune a model on a pack (LoRA / QLoRA / full); torchrun for many GPUs"


def register(sub: Any) -> None:
    parser = sub.add_parser("train", help=HELP, description=HELP + ". Runs under torchrun as is.")
    parser.add_argument("recipe", help="recipe YAML (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=1e-4 data.batch_size=8")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train import train  # noqa: PLC0415 (needs torch)

    model_dir = train(args.recipe, args.overrides)
    print(f"model saved to {model_dir}")
    return 0

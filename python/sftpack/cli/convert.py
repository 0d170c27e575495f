"""sftpack convert CHECKPOINT OUT: a DeepSpeed checkpoint of sftpack train → a Hugging Face folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "turn a DeepSpeed ZeRO checkpoint (checkpoint-N of sftpack train) into a Hugging Face folder"


def register(sub: Any) -> None:
    parser = sub.add_parser("convert", help=HELP, description=HELP + ": the full model, or the LoRA adapter, "
                            "with the tokenizer and the training record (template) beside it.")
    parser.add_argument("checkpoint", type=Path, help="a checkpoint-N directory written under distributed.deepspeed")
    parser.add_argument("out", type=Path, help="where to write the Hugging Face folder")
    parser.add_argument("--base", type=Path, help="the base model, if it moved since training (default: the "
                        "path recorded in the checkpoint)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train.zero import convert_checkpoint  # noqa: PLC0415 (needs torch and deepspeed)

    print(f"converted to {convert_checkpoint(args.checkpoint, args.out, args.base)}")
    return 0

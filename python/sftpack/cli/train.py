"""sftpack train RECIPE.yaml [key=value ...]: LoRA, QLoRA or full SFT on a pack."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

HELP = "fine-tune a model on a pack (LoRA / QLoRA / full); many GPUs with NPROC_PER_NODE or torchrun"
DESCRIPTION = HELP + """.

One process by default. NPROC_PER_NODE=N starts N processes through torchrun (and NNODES,
NODE_RANK, ADDR, PORT span machines), as does running this command under torchrun or the
deepspeed launcher yourself. --deepspeed picks a ZeRO config (zero1, zero2, zero2_offload, zero3,
zero3_offload, or a JSON file); its checkpoints become Hugging Face folders with sftpack convert."""


def register(sub: Any) -> None:
    parser = sub.add_parser("train", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML (see: sftpack configs list)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=1e-4 data.batch_size=8")
    parser.add_argument("--deepspeed", metavar="CONFIG", help="same as distributed.deepspeed=CONFIG")
    parser.set_defaults(run=run)


def torchrun_command(args: argparse.Namespace, processes: int) -> list[str]:
    env = os.environ
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--nnodes={env.get('NNODES', '1')}", f"--node_rank={env.get('NODE_RANK', '0')}",
               f"--master_addr={env.get('ADDR', '127.0.0.1')}", f"--master_port={env.get('PORT', '29500')}",
               "-m", "sftpack", "train", args.recipe, *args.overrides]
    return command + (["--deepspeed", args.deepspeed] if args.deepspeed else [])


def run(args: argparse.Namespace) -> int:
    processes = int(os.environ.get("NPROC_PER_NODE", "1"))
    if processes > 1 and "LOCAL_RANK" not in os.environ:
        return subprocess.call(torchrun_command(args, processes))
    from ..train import train  # noqa: PLC0415 (needs torch)

    overrides = list(args.overrides)
    if args.deepspeed:
        overrides.append(f"distributed.deepspeed={args.deepspeed}")
    model_dir = train(args.recipe, overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model saved to {model_dir}")
    return 0

"""sftpack quickstart: preprocess, train and chat on a task sftpack makes itself."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "make a small chat task and a tiny model, train it (~2 min on CPU), show it answering"


def register(sub: Any) -> None:
    parser = sub.add_parser("quickstart", help=HELP, description=HELP + ".")
    parser.add_argument("--out", type=Path, default=Path("sftpack-quickstart"), help="where to leave everything")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..quickstart import quickstart  # noqa: PLC0415 (needs torch)

    result = quickstart(args.out, args.steps)
    curve = ", ".join(f"{e['eval_loss']:.3f} at step {e['step']}" for e in result["evaluations"])
    print(f"\nheld-out eval loss (conversations never trained on): {curve}")
    seen = [a for a in result["answers"] if a["seen_in_training"]]
    unseen = [a for a in result["answers"] if not a["seen_in_training"]]
    for title, answers in (("pairs seen in training", seen), ("pairs it never saw", unseen)):
        right = sum(a["correct"] for a in answers)
        print(f"\nthe trained model on {title} ({right}/{len(answers)} right):")
        for a in answers:
            print(f"  {'✓' if a['correct'] else '✗'} {a['prompt']!r} -> {a['reply']!r}")
    print(f"\nleft in {args.out}: pack/ (the shards), run/ (model/: the trained HF model; metrics.jsonl), "
          f"recipe.yaml (train it again: sftpack train {args.out / 'recipe.yaml'})")
    return 0 if all(a["correct"] for a in seen) else 1

"""sftpack inspect: how records are tokenized and which tokens are trained, in a dataset or a pack."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jobs import samples
from ._common import add_engine_arguments, engine_options, use_color, where

HELP = "show decoded records with their trained tokens marked: a dataset's first records, or a pack's rows"
DESCRIPTION = HELP + """.

DATA: records as training encodes them, with tokens per role (needs --tokenizer).
PACK (a folder written by sftpack preprocess): its counts, row and document length histograms, then
rows with each document's source (file:line) and its trained tokens; the tokenizer is the one the
pack was made with unless --tokenizer names another copy."""
GREEN, DIM, RESET = "\x1b[32m", "\x1b[2m", "\x1b[0m"


def register(sub: Any) -> None:
    parser = sub.add_parser("inspect", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(parser, tokenizer_required=False)
    parser.add_argument("-n", type=int, default=3, metavar="N", help="records (or pack rows) to show (default 3)")
    parser.add_argument("--row", type=int, metavar="I", help="a pack: start at row I (default 0)")
    parser.set_defaults(run=run)


def render_runs(runs: list[tuple[str, bool]], color: bool) -> str:
    parts = []
    for text, trained in runs:
        if color:
            parts.append(f"{GREEN}{text}{RESET}" if trained else f"{DIM}{text}{RESET}")
        else:
            parts.append(f"{{+{text}+}}" if trained else text)
    return "".join(parts)


def legend(color: bool) -> str:
    return "legend: " + ("trained tokens in green, others dimmed" if color else "trained tokens inside {+ +}")


def run(args: argparse.Namespace) -> int:
    if len(args.data) == 1 and (Path(args.data[0]) / "manifest.json").is_file():
        return show_pack(Path(args.data[0]), args)
    if not args.tokenizer:
        raise ConfigError("inspect DATA needs the tokenizer that encodes it",
                          "pass --tokenizer DIR (a pack folder needs none: it names its own)")
    color = use_color()
    print(legend(color))
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


def print_histogram(title: str, bins: list[tuple[int, int, int]], width: int = 40) -> None:
    print(title)
    top = max((count for _, _, count in bins), default=0)
    for low, high, count in bins:
        bar = "█" * (round(width * count / top) if top else 0)
        print(f"  {low:>7,}-{high:<7,} {count:>9,} {bar}")


def show_pack(path: Path, args: argparse.Namespace) -> int:
    from ..data import PackDataset  # noqa: PLC0415
    from ..data.view import histogram, pack_tokenizer, row_documents  # noqa: PLC0415
    from ..encoding import Encoder  # noqa: PLC0415

    pack = PackDataset(path)
    manifest = pack.manifest
    counts = manifest["counts"]
    documents = pack.document_lengths()
    row_lengths = pack.lengths()
    top = pack.max_length or int(row_lengths.max(initial=1))
    print(f"pack {path}: {len(pack):,} rows of at most {top:,} tokens, {len(documents):,} documents, "
          f"{counts['tokens']:,} tokens ({100 * counts['trained_tokens'] / max(counts['tokens'], 1):.1f}% trained), "
          f"packing efficiency {100 * counts['packing_efficiency']:.2f}%")
    print(f"  template {manifest['template']['name']}; records read {counts['records_read']:,} = packed "
          f"{counts['packed']:,} + rejected {counts['rejected']:,} + dropped {counts['dropped']:,} (rejects.jsonl)")
    print_histogram("row lengths (tokens):", histogram(row_lengths, top))
    print_histogram("document lengths (tokens):", histogram(documents, top))
    if not len(pack):
        return 0
    encoder = Encoder(pack_tokenizer(pack, args.tokenizer))
    color = use_color()
    print(legend(color))
    first = min(max(args.row or 0, 0), len(pack) - 1)
    for index in range(first, min(len(pack), first + args.n)):
        docs = row_documents(pack, index, encoder)
        print(f"══ row {index}: {int(row_lengths[index]):,} tokens, {len(docs)} document{'s' * (len(docs) != 1)}")
        for number, doc in enumerate(docs, 1):
            print(f"── document {number}/{len(docs)} from {doc['file']}:{doc['line']}: {doc['tokens']:,} tokens, "
                  f"{doc['trained']:,} trained")
            print(render_runs(doc["runs"], color))
    return 0

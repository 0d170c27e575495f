"""sftpack pack merge PART... --out DIR: join the packs of a partitioned preprocess run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..parts import merge_packs

HELP = "work with finished packs: merge the parts of a partitioned run into one pack"
MERGE_HELP = ("join the packs of `sftpack preprocess --num-shards N --shard-index I` (all N parts, in any order) "
              "into one pack; nothing is re-tokenized")


def register(sub: Any) -> None:
    parser = sub.add_parser("pack", help=HELP, description=HELP + ".")
    actions = parser.add_subparsers(dest="pack_command", metavar="ACTION", required=True)
    merge = actions.add_parser("merge", help=MERGE_HELP, description=MERGE_HELP + ".")
    merge.add_argument("parts", nargs="+", type=Path, metavar="PART", help="the --out directory of each part")
    merge.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the merged pack")
    merge.add_argument("--overwrite", action="store_true", help="replace another pack at --out")
    merge.set_defaults(run=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    result = merge_packs(args.parts, args.out, overwrite=args.overwrite)
    manifest = result["manifest"]
    counts = manifest["counts"]
    print(f"{result['status']}: {result['out']} from {len(manifest['merged_from'])} parts")
    print(f"  records read {counts['records_read']:,} = packed {counts['packed']:,} + rejected "
          f"{counts['rejected']:,} + dropped {counts['dropped']:,}")
    print(f"  tokens {counts['tokens']:,} in {counts['rows']:,} rows, {len(manifest['shards'])} shards; "
          f"packing efficiency {100 * counts['packing_efficiency']:.2f}%")
    validation = manifest.get("validation")
    if validation:
        print(f"  validation split: {validation['records']:,} records held out "
              f"({validation['documents']:,} packed) in {Path(result['out']) / validation['path']}")
    return 0

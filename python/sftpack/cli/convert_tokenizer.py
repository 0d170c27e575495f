"""sftpack convert-tokenizer DIR: write tokenizer.json for a SentencePiece-only tokenizer."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import TokenizerError

HELP = "convert a SentencePiece tokenizer.model into tokenizer.json (once, needs transformers)"


def register(sub: Any) -> None:
    parser = sub.add_parser("convert-tokenizer", help=HELP, description=HELP + ".")
    parser.add_argument("directory", type=Path, help="directory holding tokenizer.model (or the .model file)")
    parser.add_argument("--out", type=Path, help="where to write (default: the same directory)")
    parser.set_defaults(run=run)


def find_model(path: Path) -> Path:
    if path.is_file():
        return path
    models = sorted(p for p in path.iterdir() if p.name == "tokenizer.model" or ".model" in p.name)
    if not models:
        raise TokenizerError(f"no SentencePiece .model file in {path}")
    return models[0]


def run(args: argparse.Namespace) -> int:
    model = find_model(args.directory)
    out = args.out or (model.parent if args.directory.is_file() else args.directory)
    try:
        import sentencepiece  # noqa: F401, PLC0415 (optional dependencies)
        from transformers import LlamaTokenizer  # noqa: PLC0415
    except ImportError as error:
        raise TokenizerError(
            "converting a SentencePiece model needs transformers, sentencepiece and protobuf\n"
            "hint: pip install transformers sentencepiece protobuf"
        ) from error
    with tempfile.TemporaryDirectory() as staging:
        # transformers converts a directory's tokenizer.model; Mistral names theirs *.model.v3.
        shutil.copy(model, Path(staging) / "tokenizer.model")
        tokenizer = LlamaTokenizer.from_pretrained(staging, legacy=False)
        if len(tokenizer) <= 3:
            raise TokenizerError(f"{model} did not convert (the result has {len(tokenizer)} tokens)")
        tokenizer.save_pretrained(str(out))
    print(f"wrote {out / 'tokenizer.json'}")
    return 0

"""Shared fixtures. Real tokenizers and datasets come from ../shared/data (next to the repo, or
$SFTPACK_SHARED_DATA); tests that need them skip cleanly when it is absent."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SFTPACK_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO = REPO / "python" / "sftpack" / "assets" / "demo"


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The engine's per-tokenizer cache, fresh for the session (and for the commands the tests
    start): the suite sees first loads and cached ones, and never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("engine-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SFTPACK_CACHE_DIR", str(path))
        yield path

@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The quick start's chat task (400 conversations), its tiny random-init Llama model and a
    pack of it (rows of 256 tokens): what the training tests train on. Needs torch."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sftpack.preprocess import preprocess
    from sftpack.quickstart import make_base_model, write_data

    root = tmp_path_factory.mktemp("tiny")
    write_data(root / "chat.jsonl", count=400)
    make_base_model(root / "base")
    preprocess([root / "chat.jsonl"], root / "base", root / "pack", max_length=256)
    return {"root": root, "data": root / "chat.jsonl", "base": root / "base", "pack": root / "pack"}


@pytest.fixture(scope="session")
def tiny_eval_setup(tiny_setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny_setup's model and conversations, preprocessed with 40 of them held out as a
    validation split (pack/validation)."""
    from sftpack.preprocess import preprocess

    root = tmp_path_factory.mktemp("tiny-eval")
    preprocess([tiny_setup["data"]], tiny_setup["base"], root / "pack", max_length=256, val_size=40)
    return {**tiny_setup, "pack": root / "pack", "validation": root / "pack" / "validation"}


def per_document_eval_loss(model: Any, pack: Path) -> tuple[float, int]:
    """The loss over a pack scored one conversation at a time, unpacked: summed token loss of
    every document / trained tokens of every document. The reference for packed evaluation."""
    import torch

    from sftpack import PackDataset
    from sftpack.data import count_trained_tokens, sum_token_loss

    dataset = PackDataset(pack)
    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(len(dataset)):
            row = dataset[i]
            cu = row["cu_seqlens"]
            for start, end in zip(cu[:-1], cu[1:], strict=True):
                ids = torch.from_numpy(row["input_ids"][start:end].astype("int64"))[None].to(device)
                labels = torch.from_numpy(row["labels"][start:end])[None].to(device)
                total += float(sum_token_loss(model(input_ids=ids).logits, labels))
                tokens += count_trained_tokens(labels)
    return total / tokens, tokens


def train_copied_recipe(name: str, setup: dict[str, Path], folder: Path, *overrides: str,
                        ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`sftpack configs copy NAME` and `sftpack train` it as shipped, on the tiny model and pack
    (plus ``overrides``); returns the training process and the run directory."""
    copied = subprocess.run([sys.executable, "-m", "sftpack", "configs", "copy", name, str(folder)],
                            capture_output=True, text=True)
    assert copied.returncode == 0, copied.stderr
    run = folder / "run"
    result = subprocess.run([sys.executable, "-m", "sftpack", "train", str(folder / f"{name}.yaml"),
                             f"model.path={setup['base']}", f"data.pack={setup['pack']}", f"output.dir={run}",
                             *overrides], capture_output=True, text=True, timeout=600)
    return result, run


def read_metrics(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """metrics.jsonl of a run: the training steps, then the evaluations."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r], [r for r in records if "eval_loss" in r]


@pytest.fixture(scope="session")
def mistral_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Mistral's SentencePiece tokenizers v1-v3 with their Jinja templates, converted once with
    `sftpack convert-tokenizer` (needs sentencepiece)."""
    pytest.importorskip("sentencepiece")
    pytest.importorskip("transformers")
    out = {}
    for version in ("v1", "v2", "v3"):
        source = shared_path("tokenizers", f"mistral-spm-{version}")
        target = tmp_path_factory.mktemp(f"mistral-{version}")
        for file in source.iterdir():
            shutil.copy(file, target / file.name)
        result = subprocess.run([sys.executable, "-m", "sftpack", "convert-tokenizer", str(target)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        out[version] = target
    return out


def trained_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The runs of consecutive trained tokens: one per trained turn."""
    runs: list[list[int]] = [[]]
    for token, trained in zip(ids, mask, strict=True):
        if trained:
            runs[-1].append(token)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


# Tokenizers with a Jinja chat template in shared/data.
JINJA_TOKENIZERS = ["qwen3", "llama3", "phi-3-mini", "gemma3", "deepseek-v3"]


def shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (shared test data)")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A loadable copy of a shared tokenizer directory (gzipped tokenizer.json unpacked, since
    transformers reads only the plain file)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            source = shared_path("tokenizers", name)
            target = tmp_path_factory.mktemp(name)
            for file in source.iterdir():
                if file.name.endswith(".gz"):
                    with gzip.open(file, "rb") as packed, open(target / file.name[:-3], "wb") as out:
                        shutil.copyfileobj(packed, out)
                else:
                    shutil.copy(file, target / file.name)
            cache[name] = target
        return cache[name]

    return get


@pytest.fixture()
def demo_tokenizer() -> Path:
    return DEMO


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path

"""Shared fixtures. Real third-party tokenizers, datasets and golden vectors come from tests/data
(committed, license-compatible, see tests/data/SOURCES.md), so every proof runs on a fresh clone.
../shared/data (or $SFTPACK_SHARED_DATA), when present beside the repo, adds what may not be
redistributed here (the Llama-3 and Gemma-3 tokenizers, the original XTuner vectors) as extra
cases."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data"
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
        target = copy_unpacked(data_path("tokenizers", f"mistral-spm-{version}"),
                               tmp_path_factory.mktemp(f"mistral-{version}"))
        result = subprocess.run([sys.executable, "-m", "sftpack", "convert-tokenizer", str(target)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        out[version] = target
    return out


def document_tokens(pack: Path) -> list[tuple[list[int], list[int]]]:
    """(ids, trained mask) of every document in a pack, sorted: what two packs of the same
    records hold whatever their rows, files and lines."""
    from sftpack import PackDataset

    dataset = PackDataset(pack)
    out = []
    for i in range(len(dataset)):
        ids, mask, cu = (dataset.column(i, n) for n in ("input_ids", "loss_mask", "cu_seqlens"))
        out += [(ids[a:b].tolist(), mask[a:b].tolist()) for a, b in zip(cu[:-1], cu[1:], strict=True)]
    return sorted(out)


def trained_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The runs of consecutive trained tokens: one per trained turn."""
    runs: list[list[int]] = [[]]
    for token, trained in zip(ids, mask, strict=True):
        if trained:
            runs[-1].append(token)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _found(relative: Path) -> Path | None:
    for root in (FIXTURES, SHARED_DATA):
        path = root / relative
        for candidate in (path, path.with_name(path.name + ".gz")):
            if candidate.exists():
                return candidate
    return None


def data_path(*parts: str) -> Path:
    """A real third-party file or folder: tests/data first (a file there may be gzipped: then
    the .gz), else ../shared/data. Only what ../shared alone has can be missing: then the test
    skips, naming it."""
    path = _found(Path(*parts))
    if path is None:
        pytest.skip(f"{Path(*parts)} is in neither {FIXTURES} nor {SHARED_DATA}")
    return path


def read_text(path: Path) -> str:
    """A fixture's text, gzipped or not."""
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def read_json(path: Path) -> Any:
    return json.loads(read_text(path))


# Tokenizers with a Jinja chat template: the committed ones, and Llama-3 and Gemma-3 when
# ../shared has them (their licenses keep them out of the repo).
JINJA_TOKENIZERS = ["qwen3", "phi-3-mini", "deepseek-v3"] + [
    name for name in ("llama3", "gemma3") if (SHARED_DATA / "tokenizers" / name).is_dir()]


def copy_unpacked(source: Path, target: Path) -> Path:
    """Copies a fixture folder's files into ``target``, gzipped ones unpacked (transformers and
    sentencepiece read only plain files)."""
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.name.endswith(".gz"):
            (target / file.name[:-3]).write_bytes(gzip.decompress(file.read_bytes()))
        else:
            shutil.copy(file, target / file.name)
    return target


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A loadable copy of a real tokenizer directory (tests/data, else ../shared/data), with
    its gzipped files unpacked."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = copy_unpacked(data_path("tokenizers", name), tmp_path_factory.mktemp(name))
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


def free_port() -> str:
    """A port no one listens on now, for a test's torchrun rendezvous: tests that start process
    groups at the same time (pytest -n) must not meet on one port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def torchrun(processes: int = 2) -> list[str]:
    """The start of a command that runs ``processes`` local ranks, on a port of their own."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", free_port()]

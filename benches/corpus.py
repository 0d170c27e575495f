"""A real multi-turn corpus for benchmarks, built deterministically from the real datasets the
tests use (tests/data, committed; ../shared/data adds Firefly and MOSS when present): every chat
dataset mapped to OpenAI `messages` (ShareGPT, tool-call, alpaca en/zh, OpenAssistant, the XTuner
sample), repeated with a numbered system line up to the size asked for. Also the real tokenizers,
unpacked into a work folder."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]
REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data"
SHARED = Path(os.environ.get("SFTPACK_SHARED_DATA", REPO.parent / "shared" / "data"))


def find(relative: str) -> Path | None:
    """A real file or folder: tests/data (maybe gzipped), else ../shared/data."""
    for root in (FIXTURES, SHARED):
        for candidate in (root / relative, root / f"{relative}.gz"):
            if candidate.exists():
                return candidate
    return None


def read_text(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def tokenizer_dir(work: Path, name: str) -> Path:
    """A real tokenizer folder copied into ``work``, gzipped files unpacked."""
    source = find(f"tokenizers/{name}")
    if source is None:
        raise SystemExit(f"tokenizer {name!r} is in neither {FIXTURES} nor {SHARED}")
    target = work / name
    target.mkdir()
    for file in source.iterdir():
        if file.name.endswith(".gz"):
            (target / file.name[:-3]).write_bytes(gzip.decompress(file.read_bytes()))
        else:
            shutil.copy(file, target / file.name)
    return target


def _sharegpt(path: Path) -> Iterator[Messages]:
    roles = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "user"}
    for record in json.loads(read_text(path)):
        turns = [{"role": roles[t["from"]], "content": t["value"]} for t in record["conversations"]
                 if t["from"] in roles]
        if record.get("system"):
            turns.insert(0, {"role": "system", "content": record["system"]})
        yield turns


def _alpaca(path: Path) -> Iterator[Messages]:
    for r in json.loads(read_text(path)):
        prompt = r["instruction"] + ("\n" + r["input"] if r.get("input") else "")
        yield [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["output"]}]


def _firefly(path: Path) -> Iterator[Messages]:
    for line in path.read_text().splitlines():
        turns: Messages = []
        for t in json.loads(line)["conversation"]:
            turns += [{"role": "user", "content": t["human"]}, {"role": "assistant", "content": t["assistant"]}]
        yield turns


def _moss(root: Path) -> Iterator[Messages]:
    tag = re.compile(r"<\|\w+\|>:?\s*|<eo[hamtcr]>")
    for path in sorted(root.rglob("*.json")):
        record = json.loads(path.read_text())
        turns: Messages = [{"role": "system", "content": record["meta_instruction"]}]
        for key in sorted(record["chat"], key=lambda k: int(k.split("_")[1])):
            turn = record["chat"][key]
            turns.append({"role": "user", "content": tag.sub("", turn["Human"]).strip()})
            turns.append({"role": "assistant", "content": tag.sub("", turn["MOSS"]).strip()})
        yield turns


def _oasst(path: Path) -> Iterator[Messages]:
    for line in read_text(path).splitlines():
        node: dict[str, Any] | None = json.loads(line)
        turns: Messages = []
        while node:
            turns.append({"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]})
            node = (node.get("replies") or [None])[0]
        if turns and turns[-1]["role"] == "user":
            turns.pop()
        if turns:
            yield turns


READERS = [
    ("datasets/sharegpt/fastchat_dummy_conversation.json", _sharegpt),
    ("datasets/toolcall/glaive_toolcall_en_demo.json", _sharegpt),
    ("datasets/alpaca/alpaca_en_demo.json", _alpaca),
    ("datasets/chinese/alpaca_zh_demo.json", _alpaca),
    ("datasets/chinese/firefly_dummy_data.jsonl", _firefly),  # ../shared only
    ("datasets/moss/conversations", _moss),  # ../shared only
    ("datasets/oasst/en_100_message.jsonl", _oasst),
]


def conversations() -> list[Messages]:
    xtuner = find("goldens/xtuner/input.jsonl")
    assert xtuner is not None, "tests/data/goldens/xtuner/input.jsonl.gz is committed"
    out: list[Messages] = [json.loads(line)["messages"] for line in read_text(xtuner).splitlines()]
    for relative, reader in READERS:
        path = find(relative)
        if path is not None:
            out += reader(path)
    return [c for c in out if any(m["role"] == "assistant" for m in c)]


def write_corpus(path: Path, size_mb: float) -> int:
    """Writes about `size_mb` MB of JSONL; returns the number of conversations."""
    base = conversations()
    written, count, copy = 0, 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < size_mb * 1e6:
            for messages in base:
                record = {"messages": [{"role": "system", "content": f"Conversation set {copy}."}, *messages]
                          if messages[0]["role"] != "system" else messages}
                line = json.dumps(record, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode())
                count += 1
                if written >= size_mb * 1e6:
                    break
            copy += 1
    return count

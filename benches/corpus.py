"""A real multi-turn corpus for benchmarks, built deterministically from ../shared/data: every
chat dataset there mapped to OpenAI `messages` (ShareGPT, tool-call, alpaca en/zh, Firefly,
MOSS, OpenAssistant, the XTuner sample), repeated with a numbered system line up to the size
asked for."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


def _sharegpt(path: Path) -> Iterator[Messages]:
    roles = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "user"}
    for record in json.loads(path.read_text()):
        turns = [{"role": roles[t["from"]], "content": t["value"]} for t in record["conversations"]
                 if t["from"] in roles]
        if record.get("system"):
            turns.insert(0, {"role": "system", "content": record["system"]})
        yield turns


def _alpaca(path: Path) -> Iterator[Messages]:
    for r in json.loads(path.read_text()):
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
    for line in path.read_text().splitlines():
        node: dict[str, Any] | None = json.loads(line)
        turns: Messages = []
        while node:
            turns.append({"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]})
            node = (node.get("replies") or [None])[0]
        if turns and turns[-1]["role"] == "user":
            turns.pop()
        if turns:
            yield turns


def conversations(shared: Path) -> list[Messages]:
    d = shared / "datasets"
    out: list[Messages] = [r["messages"] for r in map(json.loads, (shared / "goldens/xtuner/input.jsonl").open())]
    out += _sharegpt(d / "sharegpt/fastchat_dummy_conversation.json")
    out += _sharegpt(d / "toolcall/glaive_toolcall_en_demo.json")
    out += _alpaca(d / "alpaca/alpaca_en_demo.json")
    out += _alpaca(d / "chinese/alpaca_zh_demo.json")
    out += _firefly(d / "chinese/firefly_dummy_data.jsonl")
    out += _moss(d / "moss/conversations")
    out += _oasst(d / "oasst/en_100_message.jsonl")
    return [c for c in out if any(m["role"] == "assistant" for m in c)]


def write_corpus(shared: Path, path: Path, size_mb: float) -> int:
    """Writes about `size_mb` MB of JSONL; returns the number of conversations."""
    base = conversations(shared)
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

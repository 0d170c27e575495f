"""Every supported dataset format maps to the same canonical conversation, on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftpack import Encoder, check

from .conftest import SHARED_DATA, data_path, read_text


def test_each_format_gives_the_same_tokens(demo_tokenizer: Path) -> None:
    encoder = Encoder(demo_tokenizer)
    openai = encoder.encode({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                                          {"role": "assistant", "content": "A"}]})
    xtuner = encoder.encode({"conversation": [{"system": "S", "input": "Q", "output": "A"}]})
    sharegpt = encoder.encode({"system": "S", "conversations": [{"from": "human", "value": "Q"},
                                                                {"from": "gpt", "value": "A"}]})
    alpaca = encoder.encode({"system": "S", "instruction": "Q", "input": "", "output": "A"})
    assert openai == xtuner == sharegpt == alpaca
    oasst = encoder.encode({"text": "### Human: Q ### Assistant: A"})
    assert oasst == encoder.encode([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}])


def test_real_datasets_of_every_format(tokenizer_dir, demo_tokenizer: Path) -> None:  # type: ignore[no-untyped-def]
    # (file, its format, its records); gzipped as committed in tests/data, read as they are.
    expected = [
        (("alpaca", "alpaca_en_demo.json"), "alpaca", 999),
        (("chinese", "alpaca_zh_demo.json"), "alpaca", 1000),
        (("sharegpt", "fastchat_dummy_conversation.json"), "sharegpt", 500),
        (("toolcall", "glaive_toolcall_en_demo.json"), "sharegpt", 300),
        (("identity", "identity.json"), "alpaca", 91),
        (("openai", "toy_chat_fine_tuning.jsonl"), "openai", 5),
    ]
    firefly = SHARED_DATA / "datasets" / "chinese" / "firefly_dummy_data.jsonl"
    files = [data_path("datasets", *parts) for parts, _, _ in expected]
    if firefly.is_file():  # XTuner's multi-turn `conversation` format; no license, so only in ../shared
        expected.append((("chinese", firefly.name), "xtuner", 33))
        files.append(firefly)
    report = check(files, tokenizer_dir("qwen3"))
    assert [f["format"] for f in report["files"]] == [fmt for _, fmt, _ in expected]
    assert report["records"] == sum(count for _, _, count in expected)
    assert report["records"] == report["encoded"] + report["rejected"] + report["dropped"]
    # identity.json's literal {{name}} placeholders are data, not template code.
    assert report["encoded"] > 0.95 * report["records"]


def top_ranked_path(node: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation the oasst_tree format reads from a message tree, written out plainly:
    from the root, the best-ranked reply not deleted nor failed in review, down to a leaf."""
    messages = []
    while node is not None:
        messages.append({"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]})
        usable = [(r.get("rank") if r.get("rank") is not None else float("inf"), i, r)
                  for i, r in enumerate(node.get("replies") or [])
                  if not r.get("deleted") and r.get("review_result") is not False]
        node = min(usable, key=lambda t: (t[0], t[1]))[2] if usable else None
    return messages[:-1] if messages[-1]["role"] == "user" else messages


def test_oasst_message_trees_become_their_top_ranked_conversation(tokenizer_dir) -> None:  # type: ignore[no-untyped-def]
    path = data_path("datasets", "oasst", "en_100_message.jsonl")
    trees = [json.loads(line) for line in read_text(path).splitlines()]
    encoder = Encoder(tokenizer_dir("qwen3"))
    report = check([path], tokenizer_dir("qwen3"))
    assert report["files"][0]["format"] == "oasst_tree"
    assert (report["records"], report["encoded"]) == (100, 100)
    multi_turn = 0
    for tree in trees:
        expected = top_ranked_path(tree)
        multi_turn += len(expected) > 2
        assert encoder.encode(tree) == encoder.encode(expected)
    assert multi_turn > 0

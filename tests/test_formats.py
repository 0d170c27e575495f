"""Every supported dataset format maps to the same canonical conversation, on real files."""

from __future__ import annotations

from pathlib import Path

from sftpack import Encoder, check

from .conftest import shared_path


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
    files = [
        shared_path("datasets", "alpaca", "alpaca_en_demo.json"),
        shared_path("datasets", "chinese", "alpaca_zh_demo.json"),
        shared_path("datasets", "chinese", "firefly_dummy_data.jsonl"),
        shared_path("datasets", "sharegpt", "fastchat_dummy_conversation.json"),
        shared_path("datasets", "toolcall", "glaive_toolcall_en_demo.json"),
        shared_path("datasets", "identity", "identity.json"),
        shared_path("datasets", "openai", "toy_chat_fine_tuning.jsonl"),
    ]
    report = check(files, tokenizer_dir("qwen3"))
    formats = [f["format"] for f in report["files"]]
    assert formats == ["alpaca", "alpaca", "xtuner", "sharegpt", "sharegpt", "alpaca", "openai"]
    assert report["records"] == 999 + 1000 + 33 + 500 + 300 + 91 + 5
    assert report["records"] == report["encoded"] + report["rejected"] + report["dropped"]
    # identity.json's literal {{name}} placeholders are data, not template code.
    assert report["encoded"] > 0.95 * report["records"]

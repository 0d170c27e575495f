"""Built-in templates reproduce XTuner 0.2.0 (openai_map_fn → template_map_fn → encode_fn) token
for token, against vectors produced by running XTuner itself (shared/data/goldens/xtuner)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sftpack import Encoder

from .conftest import read_jsonl, shared_path

PAIRS = [
    ("qwen3", "qwen_chat"),
    ("qwen3", "internlm2_chat"),
    ("llama3", "llama3_chat"),
    ("llama3", "default"),
    ("phi-3-mini", "phi3_chat"),
    ("deepseek-v3", "deepseek_v2"),
]


@pytest.mark.parametrize(("tokenizer", "template"), PAIRS)
def test_ids_and_labels_equal_xtuner(tokenizer: str, template: str, tokenizer_dir: Callable[[str], Path]) -> None:
    inputs = read_jsonl(shared_path("goldens", "xtuner", "input.jsonl"))
    goldens = read_jsonl(shared_path("goldens", "xtuner", f"{tokenizer}-{template}.jsonl.gz"))
    encoder = Encoder(tokenizer_dir(tokenizer), template=template)
    assert len(goldens) == len(inputs)
    for golden in goldens:
        out = encoder.encode(inputs[golden["line"] - 1])
        assert out.input_ids == golden["input_ids"], f"line {golden['line']}: ids differ"
        assert out.labels == golden["labels"], f"line {golden['line']}: labels differ"


def test_loss_false_on_an_assistant_turn_is_honoured(tokenizer_dir: Callable[[str], Path]) -> None:
    encoder = Encoder(tokenizer_dir("qwen3"), template="qwen_chat")
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "loss": "False"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    out = encoder.encode(messages)
    trained = [t for t, m in zip(out.input_ids, out.loss_mask, strict=False) if m]
    assert encoder.decode(trained) == "d<|im_end|>"

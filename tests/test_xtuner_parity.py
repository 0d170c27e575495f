"""Built-in templates reproduce XTuner 0.2.0 (openai_map_fn → template_map_fn → encode_fn) token
for token, against vectors produced by running XTuner itself: shared/data/goldens/xtuner (six
tokenizer × template pairs) and tests/vectors/xtuner (all 27 templates on the Llama-3 tokenizer,
made by scripts/xtuner_vectors.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sftpack import Encoder, SftpackError

from .conftest import REPO, read_jsonl, shared_path

VECTORS = sorted((REPO / "tests" / "vectors" / "xtuner").glob("*.jsonl.gz"))

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


def spans_to_labels(input_ids: list[int], trained: list[list[int]]) -> list[int]:
    labels = [-100] * len(input_ids)
    for start, end in trained:
        labels[start:end] = input_ids[start:end]
    return labels


@pytest.mark.parametrize("vectors", VECTORS, ids=lambda p: p.name.removesuffix(".jsonl.gz"))
def test_every_builtin_template_equals_xtuner(vectors: Path, tokenizer_dir: Callable[[str], Path]) -> None:
    tokenizer, template = vectors.name.removesuffix(".jsonl.gz").split("-", 1)
    inputs = read_jsonl(shared_path("goldens", "xtuner", "input.jsonl"))
    encoder = Encoder(tokenizer_dir(tokenizer), template=template)
    expected = read_jsonl(vectors)
    assert len(expected) == len(inputs)
    for vector in expected:
        record = inputs[vector["line"] - 1]
        if "error" in vector:  # XTuner crashes on a system message for a template without SYSTEM
            with pytest.raises(SftpackError, match="unsupported_system|no system prompt"):
                encoder.encode(record)
            continue
        out = encoder.encode(record)
        assert out.input_ids == vector["input_ids"], f"line {vector['line']}: ids differ"
        assert out.labels == spans_to_labels(vector["input_ids"], vector["trained"]), f"line {vector['line']}"


def test_the_vectors_cover_every_builtin_template() -> None:
    from sftpack import _core

    names = set(json.loads(_core.builtin_templates()))
    assert {p.name.removesuffix(".jsonl.gz").split("-", 1)[1] for p in VECTORS} == names


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

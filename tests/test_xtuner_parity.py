"""Built-in templates reproduce XTuner 0.2.0 (openai_map_fn → template_map_fn → encode_fn) token
for token, against vectors produced by running XTuner itself: tests/data/goldens/xtuner (every
built-in template on Phi-3's tokenizer, and Qwen3/DeepSeek-V3 with their own; made by
scripts/make_test_fixtures.py --xtuner), and ../shared/data/goldens/xtuner (six tokenizer ×
template pairs, Llama-3 among them) when it is present."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sftpack import Encoder, SftpackError

from .conftest import FIXTURES, SHARED_DATA, read_jsonl

VECTORS = sorted((FIXTURES / "goldens" / "xtuner").glob("*-*.jsonl.gz"))
SHARED_GOLDENS = sorted((SHARED_DATA / "goldens" / "xtuner").glob("*-*.jsonl.gz"))


def spans_to_labels(input_ids: list[int], trained: list[list[int]]) -> list[int]:
    labels = [-100] * len(input_ids)
    for start, end in trained:
        labels[start:end] = input_ids[start:end]
    return labels


def pair(vectors: Path) -> tuple[str, str]:
    """(tokenizer, template) from a vector file's name; tokenizer names may hold dashes."""
    tokenizer, _, template = vectors.name.removesuffix(".jsonl.gz").rpartition("-")
    return tokenizer, template


@pytest.mark.parametrize("vectors", VECTORS, ids=lambda p: p.name.removesuffix(".jsonl.gz"))
def test_every_builtin_template_equals_xtuner(vectors: Path, tokenizer_dir: Callable[[str], Path]) -> None:
    tokenizer, template = pair(vectors)
    inputs = read_jsonl(FIXTURES / "goldens" / "xtuner" / "input.jsonl.gz")
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


if SHARED_GOLDENS:  # ../shared's own vectors (Llama-3's among them), where it is present
    @pytest.mark.parametrize("goldens", SHARED_GOLDENS, ids=lambda p: p.name.removesuffix(".jsonl.gz"))
    def test_shared_goldens_equal_xtuner(goldens: Path, tokenizer_dir: Callable[[str], Path]) -> None:
        tokenizer, template = pair(goldens)
        inputs = read_jsonl(SHARED_DATA / "goldens" / "xtuner" / "input.jsonl")
        encoder = Encoder(tokenizer_dir(tokenizer), template=template)
        expected = read_jsonl(goldens)
        assert len(expected) == len(inputs)
        for golden in expected:
            out = encoder.encode(inputs[golden["line"] - 1])
            assert out.input_ids == golden["input_ids"], f"line {golden['line']}: ids differ"
            assert out.labels == golden["labels"], f"line {golden['line']}: labels differ"


def test_the_vectors_cover_every_builtin_template() -> None:
    from sftpack import _core

    names = set(json.loads(_core.builtin_templates()))
    assert {pair(p)[1] for p in VECTORS} == names


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

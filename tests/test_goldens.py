"""Third-party goldens (tests/data): mistral-common's token ids for its own SentencePiece
tokenizers and Jinja templates, after a one-time `sftpack convert-tokenizer`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftpack import Encoder

from .conftest import data_path, read_json

pytest.importorskip("sentencepiece")
pytest.importorskip("transformers")

# (model version, case): the cases whose ids sftpack reproduces exactly. docs/data.md explains
# the two where mistral-common and the Jinja template disagree (and sftpack follows the template,
# as transformers does): v2 parallel_calls and v3 get_weather_full.
CASES = [("v1", "no_tools"), ("v2", "no_tools"), ("v3", "no_tools"), ("v2", "several_calls"),
         ("v3", "several_calls"), ("v3", "parallel_calls")]


@pytest.mark.parametrize(("version", "case"), CASES)
def test_mistral_common_ids(mistral_tokenizers: dict[str, Path], version: str, case: str) -> None:
    directory = mistral_tokenizers[version]
    template = next(directory.glob("*.jinja"))
    sample = read_json(data_path("goldens", "mistral-common", case, "sample.json"))
    golden = read_json(data_path("goldens", "mistral-common", case, f"tokens_{version}.json"))
    encoder = Encoder(directory, template=str(template))
    out = encoder.encode(sample)
    assert out.input_ids == golden["tokens"]
    trained = encoder.decode([t for t, m in zip(out.input_ids, out.loss_mask, strict=True) if m])
    assert "[INST]" not in trained and "[AVAILABLE_TOOLS]" not in trained and "[TOOL_RESULTS]" not in trained
    rendered = encoder.decode(out.input_ids)
    for message in sample["messages"]:
        if message["role"] != "assistant":
            continue
        # every assistant turn the template renders is trained: its text, or its calls (v2
        # leaves out tool calls before the last user turn; they have no tokens to train)
        assert (message.get("content") or "").strip() in trained
        for call in message.get("tool_calls") or []:
            arguments = json.dumps(call["function"]["arguments"])[:20]
            assert (arguments in trained) == (arguments in rendered)

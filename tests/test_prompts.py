"""One renderer for training, samples and chat: the generation prompt the engine renders for the
turns before a reply is exactly the training ids up to where that reply's trained tokens begin,
and the stop tokens end each reply where training ended it. For all 27 built-in templates and
every real Jinja template, on real conversations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sftpack import Encoder, RecordError, _core
from sftpack.encoding import StopTokens
from sftpack.lifecycle import reply_prompt_mismatch

from .conftest import DEMO, JINJA_TOKENIZERS, data_path, read_jsonl, trained_runs

BUILTIN = json.loads(_core.builtin_templates())


def conversations(limit: int = 80) -> list[dict[str, Any]]:
    """Real multi-turn conversations (XTuner's 199, drawn from the real datasets)."""
    return read_jsonl(data_path("goldens", "xtuner", "input.jsonl"), limit)


MULTI_TURN = [
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},
                  {"role": "assistant", "content": "6"}, {"role": "user", "content": "and <|im_end|> 4+4?"},
                  {"role": "assistant", "content": "8"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "there"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                  {"role": "assistant", "content": "Ciao"}]},
]


def checked_replies(encoder: Encoder, records: list[dict[str, Any]]) -> int:
    """Asserts the prompt-prefix property for every record the template accepts; returns how
    many records were checked."""
    checked = 0
    for record in records:
        try:
            mismatch = reply_prompt_mismatch(encoder, record)
        except RecordError:  # refused in training too (e.g. a system message the template lacks)
            continue
        assert mismatch is None, (encoder.template_name, mismatch, record["messages"][:3])
        checked += 1
    return checked


@pytest.mark.parametrize("template", sorted(BUILTIN))
def test_builtin_prompts_continue_the_training_ids_on_the_demo_tokenizer(template: str) -> None:
    assert checked_replies(Encoder(DEMO, template), MULTI_TURN) >= 1


@pytest.mark.parametrize("template", sorted(BUILTIN))
def test_builtin_prompts_continue_the_training_ids(template: str, tokenizer_dir: Callable[[str], Path]) -> None:
    encoder = Encoder(tokenizer_dir("phi-3-mini"), template)
    assert checked_replies(encoder, conversations() + MULTI_TURN) >= 40


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_jinja_prompts_continue_the_training_ids(name: str, tokenizer_dir: Callable[[str], Path]) -> None:
    assert checked_replies(Encoder(tokenizer_dir(name)), conversations() + MULTI_TURN) >= 60


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_jinja_prompts_equal_transformers_generation_prompts(name: str,
                                                             tokenizer_dir: Callable[[str], Path]) -> None:
    transformers = pytest.importorskip("transformers")
    path = tokenizer_dir(name)
    reference = transformers.AutoTokenizer.from_pretrained(str(path))
    encoder = Encoder(path)
    compared = 0
    for record in conversations(40):
        messages = record["messages"]
        for i in range(1, len(messages)):
            if messages[i]["role"] != "assistant" or messages[i - 1]["role"] == "assistant":
                continue
            try:
                expected = list(reference.apply_chat_template(messages[:i], add_generation_prompt=True,
                                                              return_dict=True)["input_ids"])
            except Exception:  # the template refuses this prefix (e.g. roles must alternate)
                continue
            assert encoder.prompt(messages[:i]) == expected, (name, messages[:i])
            compared += 1
    assert compared >= 40


def has_system_and_several_replies(record: dict[str, Any]) -> bool:
    roles = [m["role"] for m in record["messages"]]
    return "system" in roles and roles.count("assistant") > 1


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_mistral_jinja_prompts_continue_the_training_ids(mistral_tokenizers: dict[str, Path], version: str) -> None:
    """Mistral's v2/v3 templates put the system message into the *last* user turn: a prompt for
    an earlier reply carries it where the training ids do not, so such replies are the one
    exception (the last reply of every conversation still continues its training ids)."""
    directory = mistral_tokenizers[version]
    encoder = Encoder(directory, template=str(next(directory.glob("*.jinja"))))
    records = conversations() + MULTI_TURN
    if version != "v1":
        moved = [r for r in records if has_system_and_several_replies(r)]
        for record in moved:
            mismatch = reply_prompt_mismatch(encoder, record)
            assert mismatch is not None and mismatch["message"] < len(record["messages"]) - 1
            last_prompt = encoder.prompt(record["messages"][:-1])
            ids = encoder.encode(record).input_ids
            assert ids[:len(last_prompt)] == last_prompt
        records = [r for r in records if not has_system_and_several_replies(r)]
    assert checked_replies(encoder, records) >= 40


def test_qwen3_without_thinking_prompts_differ_from_earlier_training_turns(
        tokenizer_dir: Callable[[str], Path]) -> None:
    """Qwen3 with enable_thinking=false writes an empty <think> block into the generation prompt
    but not into earlier assistant turns: chat then continues the training ids for the last reply
    of a conversation only, and `template check` reports the earlier ones."""
    encoder = Encoder(tokenizer_dir("qwen3"), template_kwargs={"enable_thinking": False})
    record = MULTI_TURN[0]
    encoded = encoder.encode(record)
    messages = record["messages"]
    last = encoder.prompt(messages[:-1])
    assert encoded.input_ids[:len(last)] == last and encoded.loss_mask[len(last)] == 1
    assert encoder.decode(last).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    mismatch = reply_prompt_mismatch(encoder, record)
    assert mismatch is not None and mismatch["message"] == 2


def generation_stops_at(run: list[int], stops: StopTokens, decode: Callable[[list[int]], str]) -> str | None:
    """What a model that writes a trained reply token by token has written when generation
    stops (at a stop id, or once a stop text appears); None if it never stops."""
    for n in range(1, len(run) + 1):
        if run[n - 1] in stops.ids:
            return decode(run[:n - 1])
        text = decode(run[:n])
        for stop in stops.texts:
            if stop in text:
                return text.split(stop, 1)[0]
    return None


def assert_replies_end_at_stops(encoder: Encoder, records: list[dict[str, Any]]) -> int:
    stops = encoder.stop_tokens()
    checked = 0
    for record in records:
        try:
            encoded = encoder.encode(record)
        except RecordError:
            continue
        replies = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        runs = trained_runs(encoded.input_ids, encoded.loss_mask)
        if len(runs) != len(replies):  # XTuner templates drop leading replies; checked elsewhere
            continue
        for run, reply in zip(runs, replies, strict=True):
            written = generation_stops_at(run, stops, encoder.decode)
            assert written is not None, f"{encoder.template_name}: generation would not stop after {reply[:40]!r}"
            assert written.strip().endswith(reply.strip()[-40:]), (encoder.template_name, written[-80:], reply[-40:])
        checked += 1
    return checked


END_OF_TURN = {"qwen3": "<|im_end|>", "llama3": "<|eot_id|>", "phi-3-mini": "<|end|>",
               "gemma3": "<end_of_turn>", "deepseek-v3": "<｜end▁of▁sentence｜>"}


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_stop_tokens_are_the_trained_end_of_turn_and_eos(name: str, tokenizer_dir: Callable[[str], Path]) -> None:
    path = tokenizer_dir(name)
    encoder = Encoder(path)
    stops = encoder.stop_tokens()
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(path))
    expected = {reference.convert_tokens_to_ids(END_OF_TURN[name]), reference.eos_token_id}
    assert set(stops.ids) == expected and stops.texts == []
    assert assert_replies_end_at_stops(encoder, conversations()) >= 60


@pytest.mark.parametrize("template", sorted(BUILTIN))
def test_builtin_stop_tokens_end_every_trained_reply(template: str, tokenizer_dir: Callable[[str], Path]) -> None:
    encoder = Encoder(tokenizer_dir("phi-3-mini"), template)  # it has a BOS and an EOS token
    stops = encoder.stop_tokens()
    definition = BUILTIN[template]
    if not definition["suffix_as_eos"]:  # XTuner appends (and trains) EOS after every reply
        assert encoder.token_to_id("<|endoftext|>") in stops.ids  # Phi-3's EOS
    suffix = definition["suffix"].strip()
    if encoder.token_to_id(suffix) is not None:  # a real token (Phi-3's <|end|>): a stop id, not a stop text
        assert encoder.token_to_id(suffix) in stops.ids and suffix not in stops.texts
    assert assert_replies_end_at_stops(encoder, conversations() + MULTI_TURN) >= 40


def test_the_engine_rebuilds_a_pack_template_from_its_manifest(tmp_path: Path) -> None:
    """Chat and samples take the template from the manifest (or the training record): a copy
    that no longer exists as a file, a built-in, or the tokenizer's own, renders the same."""
    jinja = tmp_path / "mine.jinja"
    jinja.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>\n{% endfor %}"
                     "{% if add_generation_prompt %}<assistant>{% endif %}")
    messages = MULTI_TURN[1]["messages"][:-1]

    def recorded(encoder: Encoder) -> dict[str, Any]:
        return {"template": {"name": encoder.template_name, "source": encoder.template_source}}

    for spec in (None, "qwen_chat", str(jinja)):
        original = Encoder(DEMO, spec)
        rebuilt = Encoder.for_pack(recorded(original), DEMO)
        assert rebuilt.template_name == original.template_name
        assert rebuilt.prompt(messages) == original.prompt(messages)
        assert rebuilt.stop_tokens() == original.stop_tokens()
    from_file = Encoder(DEMO, str(jinja))
    jinja.unlink()
    assert Encoder.for_pack(recorded(from_file), DEMO).prompt(messages) == from_file.prompt(messages)


def test_a_prompt_must_end_with_a_message_to_answer() -> None:
    with pytest.raises(RecordError, match="nothing_to_answer"):
        Encoder(DEMO).prompt([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    with pytest.raises(RecordError, match="nothing_to_answer"):
        Encoder(DEMO, "qwen_chat").prompt([{"role": "user", "content": "Hi"},
                                           {"role": "assistant", "content": "Hello"}])

"""Token ids equal transformers' apply_chat_template, and masks follow the documented rule, on
every real tokenizer with a chat template and real conversations (tests/data)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sftpack import Encoder, RecordError
from sftpack.errors import record_problems

from .conftest import JINJA_TOKENIZERS, data_path, read_json, read_jsonl, trained_runs

transformers = pytest.importorskip("transformers")


def openai_conversations() -> list[dict[str, Any]]:
    """Real conversations in OpenAI format: XTuner's 199 (drawn from the real datasets), the
    OpenAI cookbook file, and alpaca / ShareGPT demos mapped as sftpack maps them."""
    rows = read_jsonl(data_path("goldens", "xtuner", "input.jsonl"))
    rows += read_jsonl(data_path("datasets", "openai", "toy_chat_fine_tuning.jsonl"))
    alpaca = read_json(data_path("datasets", "alpaca", "alpaca_en_demo.json"))[:150]
    for r in alpaca:
        prompt = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["output"]}]})
    sharegpt = read_json(data_path("datasets", "sharegpt", "fastchat_dummy_conversation.json"))[:150]
    roles = {"human": "user", "gpt": "assistant"}
    for r in sharegpt:
        rows.append({"messages": [{"role": roles[t["from"]], "content": t["value"]} for t in r["conversations"]]})
    return rows


def reference_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int] | None:
    try:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    except Exception:  # the template rejects the conversation (raise_exception)
        return None
    return list(out["input_ids"])


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_ids_equal_apply_chat_template(name: str, tokenizer_dir: Callable[[str], Path]) -> None:
    path = tokenizer_dir(name)
    reference = transformers.AutoTokenizer.from_pretrained(str(path))
    encoder = Encoder(path)
    compared = 0
    for row in openai_conversations():
        expected = reference_ids(reference, row["messages"])
        try:
            got = encoder.encode(row).input_ids
        except RecordError as error:
            kinds = {p["kind"] for p in record_problems(error)}
            # sftpack may only refuse what the template refuses, or records with nothing to train.
            assert expected is None or kinds <= {"no_trained_tokens", "empty_assistant"}, (row, error)
            continue
        assert expected is not None, f"transformers rejects a record sftpack accepted: {row}"
        assert got == expected, f"{name}: ids differ for {row['messages'][0]['content'][:60]!r}"
        compared += 1
    assert compared > 400


def trained_spans_reference(tokenizer: Any, messages: list[dict[str, Any]]) -> list[tuple[int, int]] | None:
    """The mask rule of issue 2, computed with transformers' renderer (char offsets)."""
    def render(msgs: list[dict[str, Any]], gen: bool) -> str:
        text: str = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        return text

    try:
        full = render(messages, False)
    except Exception:
        return None
    spans = []
    for i, message in enumerate(messages):
        if not message.get("loss", message["role"] == "assistant"):
            continue
        try:
            prefix = render(messages[:i], message["role"] == "assistant") if i else ""
            upto = render(messages[: i + 1], False)
        except Exception:
            return None
        if not (full.startswith(prefix) and full.startswith(upto)):
            return None  # not prefix-stable: the rule locates the message instead
        spans.append((len(prefix), len(upto.rstrip())))
    return spans


# Llama-3's first template appends the assistant header even without add_generation_prompt, so
# prefixes are not prefix-stable there; its masks are checked structurally below.
@pytest.mark.parametrize("name", [name for name in JINJA_TOKENIZERS if name != "llama3"])
def test_masks_follow_the_prefix_rule(name: str, tokenizer_dir: Callable[[str], Path]) -> None:
    path = tokenizer_dir(name)
    reference = transformers.AutoTokenizer.from_pretrained(str(path))
    encoder = Encoder(path)
    checked = 0
    for row in read_jsonl(data_path("goldens", "xtuner", "input.jsonl")):
        messages = row["messages"]
        spans = trained_spans_reference(reference, messages)
        if spans is None or reference_ids(reference, messages) is None:
            continue
        full = reference.apply_chat_template(messages, tokenize=False)
        offsets = reference(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        expected = [int(any(s <= start < e for s, e in spans)) for start, _ in offsets]
        try:
            got = encoder.encode(row).loss_mask
        except RecordError:
            assert sum(expected) == 0
            continue
        assert got == expected, f"{name}: mask differs for {messages[0]['content'][:60]!r}"
        checked += 1
    # Records whose prefixes render differently (Qwen3 adds <think> to the last turn, Phi-3 closes
    # the conversation with EOS) are located instead; they are covered by the test below.
    assert checked >= 80


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_each_assistant_turn_is_trained_through_its_end_of_turn_token(
    name: str, tokenizer_dir: Callable[[str], Path]
) -> None:
    path = tokenizer_dir(name)
    encoder = Encoder(path)
    eos = json.loads((path / "tokenizer_config.json").read_text())["eos_token"]
    eos = eos["content"] if isinstance(eos, dict) else eos
    end_of_turn = {"qwen3": "<|im_end|>", "llama3": "<|eot_id|>", "phi-3-mini": "<|end|>",
                   "gemma3": "<end_of_turn>", "deepseek-v3": "<｜end▁of▁sentence｜>"}[name]
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    ]
    out = encoder.encode(messages)
    runs, current = [], []
    for token, trained in zip(out.input_ids, out.loss_mask, strict=False):
        if trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    texts = [encoder.decode(run) for run in runs]
    assert len(texts) == 2, texts
    for text, answer in zip(texts, ["4", "6"], strict=False):
        # Phi-3's template closes the whole conversation with EOS, which is trained with it.
        assert text.endswith(end_of_turn) or text.endswith(end_of_turn + eos), texts
        assert answer in text and "user" not in text and "What" not in text, texts


def tool_call_conversations(content_null: bool) -> list[dict[str, Any]]:
    """The glaive tool-calling demo (tests/data) in OpenAI form: calls as `tool_calls` on
    assistant messages whose content is null, as OpenAI's API writes them (or "")."""
    rows = read_json(data_path("datasets", "toolcall", "glaive_toolcall_en_demo.json"))
    records = []
    for row in rows:
        messages: list[dict[str, Any]] = []
        for turn in row["conversations"]:
            if turn["from"] == "function_call":
                call = json.loads(turn["value"])
                messages.append({"role": "assistant", "content": None if content_null else "",
                                 "tool_calls": [{"type": "function", "function": call}]})
            else:
                role = {"human": "user", "gpt": "assistant", "observation": "tool"}[turn["from"]]
                messages.append({"role": role, "content": turn["value"]})
        tools = [{"type": "function", "function": f} for f in json.loads(row["tools"] or "[]")]
        records.append({"messages": messages, "tools": tools})
    return records


@pytest.mark.parametrize("thinking", [True, False])
def test_tool_call_turns_are_located_and_trained(thinking: bool, tokenizer_dir: Callable[[str], Path]) -> None:
    """Qwen3, thinking on and off (off: history turns differ from the generation prompt): every
    tool-calling conversation encodes as transformers renders it, and each assistant turn — a
    call or a reply — is trained through <|im_end|>, nothing else."""
    path = tokenizer_dir("qwen3")
    reference = transformers.AutoTokenizer.from_pretrained(str(path))
    kwargs = {"enable_thinking": thinking}
    encoder = Encoder(path, template_kwargs=kwargs)
    calls = 0
    for record in tool_call_conversations(content_null=True):
        out = encoder.encode(record)
        messages = [{**m, "content": m["content"] or ""} for m in record["messages"]]
        expected = reference.apply_chat_template(messages, tools=record["tools"], tokenize=True, return_dict=True,
                                                 **kwargs)["input_ids"]
        assert out.input_ids == list(expected)
        runs = [encoder.decode(r) for r in trained_runs(out.input_ids, out.loss_mask)]
        assistant = [m for m in messages if m["role"] == "assistant"]
        assert len(runs) == len(assistant), (runs, assistant)
        for run, message in zip(runs, assistant, strict=True):
            assert run.endswith("<|im_end|>") and "<|im_start|>" not in run and "<tool_response>" not in run
            if message.get("tool_calls"):
                calls += 1
                name = message["tool_calls"][0]["function"]["name"]
                assert run.startswith("<tool_call>") and f'"name": "{name}"' in run, run
            else:
                assert message["content"].strip()[:30] in run
    assert calls >= 200


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_inspect_counts_each_trained_token_under_its_message_role(
        name: str, tokenizer_dir: Callable[[str], Path], tmp_path: Path) -> None:
    """`sftpack inspect`'s tokens per role: every trained token is a reply's (Qwen3's last reply,
    think block and all, included), the template's own tokens are never trained, and the counts
    add up to the record's tokens."""
    from sftpack.jobs import samples

    rows = read_jsonl(data_path("goldens", "xtuner", "input.jsonl"), 40)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for kwargs in ({}, {"enable_thinking": False}):
        checked = 0
        for sample in samples([data], tokenizer_dir(name), len(rows), template_kwargs=kwargs):
            if sample.get("problems"):
                continue
            roles = sample["roles"]
            assert sum(n for n, _ in roles.values()) == sample["tokens"], sample["roles"]
            assert roles["assistant"][1] == sample["trained_tokens"] > 0, (name, kwargs, roles)
            assert roles.get("template", [0, 0])[1] == 0 and roles["user"][0] > 0
            checked += 1
        assert checked >= 30


def test_qwen3_without_thinking_trains_each_reply_from_where_its_prompt_ends(
        tokenizer_dir: Callable[[str], Path]) -> None:
    """enable_thinking: false gives earlier replies no think block while the generation prompt
    has an empty one, so those replies are not prefix-stable. Their trained tokens still start
    where transformers' prefix rule puts a reply (after the header's newline) and are the same as
    with thinking on: the reply and its <|im_end|>."""
    path = tokenizer_dir("qwen3")
    thinking, plain = Encoder(path), Encoder(path, template_kwargs={"enable_thinking": False})
    compared = 0
    for row in read_jsonl(data_path("goldens", "xtuner", "input.jsonl")):
        replies = [m for m in row["messages"] if m["role"] == "assistant"]
        if len(replies) < 2 or any(m.get("loss") is False for m in replies):
            continue
        on, off = (trained_runs(out.input_ids, out.loss_mask)
                   for out in (thinking.encode(row), plain.encode(row)))
        texts = [plain.decode(run) for run in off]
        assert len(off) == len(replies) and on[:-1] == off[:-1], texts
        for text, reply in zip(texts, replies, strict=True):
            assert text == reply["content"].strip() + "<|im_end|>", (text, reply["content"][:40])
        compared += 1
    assert compared >= 40

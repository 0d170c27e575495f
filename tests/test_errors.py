"""One error model: every failure is a subclass of SftpackError with what happened (``message``)
and how to fix it (``hint``) as fields, the engine's included; every command prints them the
same way (``error:`` then ``hint:`` on stderr). The messages themselves are snapshots here, so a
change of wording is a reviewed change."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import sftpack
from sftpack import Encoder, PackDataset, RecordError, SftpackError
from sftpack.data import PackFormatError
from sftpack.errors import ConfigError, InputError, TemplateError, TokenizerError
from sftpack.preprocess import preprocess

from .conftest import DEMO

GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def sftpack_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sftpack", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text(GOOD + "\n")
    return path


def test_the_engine_raises_the_python_classes_with_message_and_hint(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as error:
        Encoder(DEMO, template="nope")
    assert isinstance(error.value, SftpackError)
    assert error.value.message == 'unknown template "nope": it is neither a built-in template nor a file'
    assert error.value.hint is not None and error.value.hint.startswith("built-in templates are ")
    assert str(error.value) == f"{error.value.message}\nhint: {error.value.hint}"
    (tmp_path / "tokenizer.model").write_bytes(b"")
    with pytest.raises(TokenizerError) as missing:
        Encoder(tmp_path)
    assert missing.value.message == f"no tokenizer.json in {tmp_path}"
    assert missing.value.hint == (f"this directory has a SentencePiece model only; convert it once with "
                                  f"`sftpack convert-tokenizer {tmp_path}`, which writes tokenizer.json beside it")


def test_record_problems_are_data() -> None:
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss": "yes"}]}
    with pytest.raises(RecordError) as error:
        Encoder(DEMO).encode(bad)
    assert error.value.problems == [{
        "kind": "invalid_loss_flag", "path": "messages[1].loss",
        "message": "\"loss\" must be true or false, found \"yes\"",
        "hint": "write \"loss\": true or \"loss\": false (the strings \"true\"/\"false\" are accepted too)"}]
    assert sftpack.errors.record_problems(error.value) == error.value.problems


def test_every_exception_is_an_sftpack_error_and_survives_pickling() -> None:
    for error in (ConfigError("a", "b"), InputError("a\nhint: b"), PackFormatError("x"),
                  RecordError("m", [{"kind": "k"}])):
        assert isinstance(error, SftpackError)
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.hint) == (type(error), str(error), error.hint)
    assert InputError("a\nhint: b").message == "a" and InputError("a\nhint: b").hint == "b"
    assert issubclass(PackFormatError, ValueError), "still caught where a ValueError was"


# (command, expected stderr): {tmp} stands for the test's folder, {data} for its data file
SNAPSHOTS = {
    "unknown template": (
        ["check", "{data}", "--tokenizer", str(DEMO), "--template", "nope"],
        'error: unknown template "nope": it is neither a built-in template nor a file\n'
        "hint: built-in templates are baichuan2_chat, baichuan_chat, chatglm2, chatglm3, code_llama_chat, "
        "cohere_chat, deepseek_coder, deepseek_moe, deepseek_v2, deepseekcoder, default, gemma, internlm2_chat, "
        "internlm_chat, llama2_chat, llama3_chat, minicpm, minicpm3, mistral, mixtral, moss_sft, phi3_chat, "
        "qwen_chat, vicuna, wizardcoder, wizardlm, zephyr; `sftpack templates list` shows them\n"),
    "settings": (
        ["preprocess", "{data}", "--tokenizer", str(DEMO), "--out", "{tmp}/pack", "--window", "0",
         "--val-size", "2.5"],
        "error: 2 problem(s) in the preprocess settings:\n"
        "  --window: expected a positive whole number, found 0\n"
        "  --val-size: '2.5' is neither a share between 0 and 1 nor a whole number of records\n"),
    "validation too large": (
        ["preprocess", "{data}", "--tokenizer", str(DEMO), "--out", "{tmp}/pack", "--val-size", "5"],
        "error: a validation split of 5 record(s) leaves nothing to train on: the inputs hold 1 record(s)\n"
        "hint: use a smaller --val-size\n"),
    "overlong": (
        ["preprocess", "{data}", "--tokenizer", str(DEMO), "--out", "{tmp}/pack", "--max-length", "4",
         "--overlong", "error"],
        "error: {data}:1: the conversation is too long (20 tokens > max_length 4), and --overlong error stops "
        "the run; nothing was written\n"
        "hint: raise --max-length, or use --overlong drop (skip and count such records) or --overlong truncate\n"),
    "map function": (
        ["check", "{data}", "--tokenizer", str(DEMO), "--map-fn", "nowhere"],
        "error: map function 'nowhere': expected module:function, file.py:function or one of "
        "['alpaca_zh', 'openorca', 'prompt_completion', 'query_response']\n"),
    "missing input": (
        ["check", "{tmp}/absent.jsonl", "--tokenizer", str(DEMO)],
        "error: cannot read {tmp}/absent.jsonl: No such file or directory (os error 2)\n"),
}


@pytest.mark.parametrize("case", sorted(SNAPSHOTS))
def test_command_line_error_messages(case: str, tmp_path: Path, data: Path) -> None:
    args, expected = SNAPSHOTS[case]
    fill = {"{tmp}": str(tmp_path), "{data}": str(data)}
    for key, value in fill.items():
        args = [a.replace(key, value) for a in args]
        expected = expected.replace(key, value)
    result = sftpack_cli(*args, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, expected)


def test_an_existing_pack_of_other_settings_and_a_broken_pack(tmp_path: Path, data: Path) -> None:
    preprocess([data], DEMO, tmp_path / "pack", max_length=64)
    with pytest.raises(ConfigError) as error:
        preprocess([data], DEMO, tmp_path / "pack", max_length=32)
    assert (error.value.message, error.value.hint) == (
        f"{tmp_path / 'pack'} already holds a pack made from other inputs or settings",
        "choose another `out`, or use `overwrite: true` to replace it")
    (tmp_path / "pack" / "manifest.json").unlink()
    with pytest.raises(PackFormatError) as broken:
        PackDataset(tmp_path / "pack")
    assert str(broken.value) == f"{tmp_path / 'pack'} has no manifest.json: it is not a finished sftpack pack"


def test_hints_name_settings_and_the_command_line_spells_them_as_flags() -> None:
    from sftpack.cli._common import as_flags

    assert as_flags("raise `max_length`, or use `overlong: truncate`") == \
        "raise --max-length, or use --overlong truncate"
    assert as_flags("use `overwrite: true`; `pack: false` writes one per row") == \
        "use --overwrite; --no-pack writes one per row"
    assert as_flags("run `huggingface-cli download ORG/NAME` first") == "run `huggingface-cli download ORG/NAME` first"
    assert as_flags("`template_kwargs`: expected a mapping") == "--template-kwargs: expected a mapping"

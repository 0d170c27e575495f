"""The command line as users run it: exit codes, human and JSON output, help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import DEMO, write_lines

GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def sftpack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sftpack", *args], capture_output=True, text=True, check=False)


def test_demo_runs_on_bundled_assets() -> None:
    result = sftpack("demo")
    assert result.returncode == 0, result.stderr
    assert "rejected 2" in result.stdout
    assert "{+" in result.stdout


def test_check_exit_codes_and_json(tmp_path: Path) -> None:
    good = write_lines(tmp_path / "good.jsonl", [GOOD, GOOD])
    result = sftpack("check", str(good), "--tokenizer", str(DEMO), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["encoded"] == 2
    bad = write_lines(tmp_path / "bad.jsonl", [GOOD, "{oops"])
    result = sftpack("check", str(bad), "--tokenizer", str(DEMO))
    assert result.returncode == 1
    assert f"{bad}:2" in result.stdout


def test_inspect_marks_trained_tokens_without_a_tty(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", [GOOD])
    result = sftpack("inspect", str(data), "--tokenizer", str(DEMO), "-n", "1")
    assert result.returncode == 0, result.stderr
    assert "{+hello<|im_end|>+}" in result.stdout
    assert "tokens per role: assistant" in result.stdout and "user" in result.stdout


def test_templates_list_and_show() -> None:
    listed = sftpack("templates", "list")
    assert listed.returncode == 0 and "llama3_chat" in listed.stdout and "phi3_chat" in listed.stdout
    shown = sftpack("templates", "show", "qwen_chat")
    assert shown.returncode == 0 and "<|im_start|>user" in shown.stdout


def test_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", [GOOD])
    result = sftpack("check", str(data), "--tokenizer", str(DEMO), "--template", "nope")
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown template")
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr


def test_inspect_opens_a_pack_with_histograms_rows_and_document_sources(tmp_path: Path) -> None:
    from sftpack import PackDataset
    from sftpack.preprocess import preprocess

    chat = DEMO / "chat.jsonl"
    preprocess([chat], DEMO, tmp_path / "pack", max_length=256)
    pack = PackDataset(tmp_path / "pack")
    documents = pack.document_lengths()
    assert len(documents) == pack.manifest["counts"]["packed"] and documents.sum() == pack.lengths().sum()
    result = sftpack("inspect", str(tmp_path / "pack"), "-n", "2", "--row", "1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{len(pack):,} rows of at most 256 tokens, {len(documents):,} documents" in out
    assert "row lengths (tokens):" in out and "document lengths (tokens):" in out
    assert "══ row 1:" in out and "══ row 2:" in out and "══ row 0:" not in out
    first = pack.sources(1)[0]
    assert f"── document 1/{len(pack.sources(1))} from {first[0]}:{first[1]}:" in out
    assert "{+" in out and "<|im_start|>assistant" in out


def test_inspect_data_without_a_tokenizer_says_what_to_pass(tmp_path: Path) -> None:
    result = sftpack("inspect", str(write_lines(tmp_path / "d.jsonl", [GOOD])))
    assert result.returncode == 1
    assert "error: inspect DATA needs the tokenizer" in result.stderr and "--tokenizer DIR" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert sftpack("check").returncode == 2
    assert sftpack("--help").returncode == 0


def test_tokens_per_role_add_up(tmp_path: Path) -> None:
    from sftpack.jobs import samples

    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}]})])
    for template in (None, "qwen_chat"):
        sample = samples([data], DEMO, 1, template=template)[0]
        roles = sample["roles"]
        assert sum(n for n, _ in roles.values()) == sample["tokens"]
        assert roles["assistant"][1] == sample["trained_tokens"] > 0
        assert roles["user"][1] == 0


def test_preprocess_summary_names_the_tokenizer_engine_and_why_it_is_the_old_one(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", [GOOD, GOOD])
    args = ("preprocess", str(data), "--tokenizer", str(DEMO), "--max-length", "64")
    result = sftpack(*args, "--out", str(tmp_path / "fast"))
    assert result.returncode == 0, result.stderr
    expected = "tokenizer engine tokenizers 1.0.0-rc.3: token starts from tokenizers 0.23 for 0 of 2 records"
    assert expected in result.stdout
    old = subprocess.run([sys.executable, "-m", "sftpack", *args, "--out", str(tmp_path / "old")],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "SFTPACK_TOKENIZER_ENGINE": "0.23"})
    assert old.returncode == 0, old.stderr
    assert "tokenizer engine tokenizers 0.23" in old.stdout
    assert "SFTPACK_TOKENIZER_ENGINE=0.23 is set" in old.stdout

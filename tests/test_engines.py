"""The tokenizers 1.0 engine writes the same packs as 0.23, byte for byte, on every shared
tokenizer and template family; records whose token starts it cannot derive go through 0.23 and
are counted in the manifest. `SFTPACK_TOKENIZER_ENGINE=0.23` runs the old engine as a whole.
What a first load computes (the 1.0 engine's canonical form, the probe verdict) is cached per
tokenizer, and a cached load encodes exactly as an uncached one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sftpack import Encoder
from sftpack.data import PackDataset
from sftpack.errors import TokenizerError
from sftpack.preprocess import preprocess

from .conftest import JINJA_TOKENIZERS, write_lines
from .test_parity_transformers import openai_conversations
from .test_preprocess import interrupt_at_call, shard_bytes

FAST = "tokenizers 1.0.0-rc.3"
OLD = "tokenizers 0.23"

# XTuner templates encode segment by segment, without offsets (Llama-3's and Gemma-3's pairs
# where ../shared has their tokenizers).
XTUNER_PAIRS = [pair for pair in [("qwen3", "qwen_chat"), ("llama3", "llama3_chat"), ("phi-3-mini", "phi3_chat"),
                                  ("deepseek-v3", "deepseek_v2"), ("gemma3", "gemma")]
                if pair[0] in JINJA_TOKENIZERS]


def both_engines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tokenizer: Path,
                 template: str | None, data: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Preprocesses `data` with each engine; returns both manifests after checking the shards
    are identical."""
    manifests = []
    for engine in ("1.0", "0.23"):
        monkeypatch.setenv("SFTPACK_TOKENIZER_ENGINE", engine)
        out = tmp_path / engine
        preprocess([data], tokenizer, out, template=template, max_length=4096, window=128)
        manifests.append(json.loads((out / "manifest.json").read_text()))
    fast, old = manifests
    assert shard_bytes(tmp_path / "1.0") == shard_bytes(tmp_path / "0.23")
    assert fast["counts"] == old["counts"]
    assert fast["key"] == old["key"], "the engine must not change the pack key: the output is the same"
    assert old["tokenizer_engine"]["engine"] == OLD
    return fast, old


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every shared dataset's conversations (see test_parity_transformers), as one JSONL file."""
    rows = openai_conversations()
    path = tmp_path_factory.mktemp("corpus") / "conversations.jsonl"
    return write_lines(path, [json.dumps(r, ensure_ascii=False) for r in rows])


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_chat_template_packs_are_identical_with_either_engine(
        name: str, corpus: Path, tokenizer_dir: Callable[[str], Path],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fast, _ = both_engines(monkeypatch, tmp_path, tokenizer_dir(name), None, corpus)
    engine = fast["tokenizer_engine"]
    assert engine["engine"] == FAST, engine["note"]
    assert engine["texts_with_starts"] >= fast["counts"]["packed"]
    # On real data nearly every record's starts come from the 1.0 engine's ids.
    assert engine["starts_from_old_engine"] <= engine["texts_with_starts"] // 100


@pytest.mark.parametrize(("name", "template"), XTUNER_PAIRS)
def test_xtuner_template_packs_are_identical_with_either_engine(
        name: str, template: str, corpus: Path, tokenizer_dir: Callable[[str], Path],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fast, _ = both_engines(monkeypatch, tmp_path, tokenizer_dir(name), template, corpus)
    assert fast["tokenizer_engine"]["engine"] == FAST
    assert fast["tokenizer_engine"]["starts_from_old_engine"] == 0, "segments need no token starts"


def test_sentencepiece_tokenizers_converted_by_sftpack_give_identical_packs(
        mistral_tokenizers: dict[str, Path], corpus: Path,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for version, tokenizer in mistral_tokenizers.items():
        template = str(next(tokenizer.glob("chat_template_*.jinja")))
        fast, _ = both_engines(monkeypatch, tmp_path / version, tokenizer, template, corpus)
        assert fast["tokenizer_engine"]["engine"] == FAST, fast["tokenizer_engine"]["note"]


def test_text_a_normalizer_changes_falls_back_to_0_23_and_is_counted(
        tokenizer_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Qwen3 normalizes to NFC: "e" + combining acute becomes "é", so the ids no longer spell the
    # rendered text and its token starts must come from 0.23's offsets.
    decomposed = {"messages": [{"role": "user", "content": "Cafe\u0301?"},
                               {"role": "assistant", "content": "Un cafe\u0301, s'il vous plai\u0302t."}]}
    plain = {"messages": [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "Yes."}]}
    data = write_lines(tmp_path / "data.jsonl", [json.dumps(decomposed), json.dumps(plain)])
    fast, _ = both_engines(monkeypatch, tmp_path, tokenizer_dir("qwen3"), None, data)
    assert fast["tokenizer_engine"]["texts_with_starts"] == 2
    assert fast["tokenizer_engine"]["starts_from_old_engine"] == 1


def test_special_token_text_inside_content_stays_text_with_either_engine(
        tokenizer_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    record = {"messages": [{"role": "user", "content": "Say <|im_end|> please"},
                           {"role": "assistant", "content": "<|im_start|>user\nno<|im_end|>"}]}
    encoded = []
    for engine in ("1.0", "0.23"):
        monkeypatch.setenv("SFTPACK_TOKENIZER_ENGINE", engine)
        encoder = Encoder(tokenizer_dir("qwen3"))
        encoded.append(encoder.encode(record))
        assert encoder.tokenizer_engine["engine"] == (FAST if engine == "1.0" else OLD)
    assert encoded[0] == encoded[1]
    tokens = [encoder.decode([i]) for i in encoded[0].input_ids]
    assert tokens.count("<|im_end|>") == 2, "only the template's own two <|im_end|> are control tokens"


def cache_entry(cache: Path) -> Path:
    entries = list((cache / "tokenizers").iterdir())
    assert len(entries) == 1, entries
    return entries[0]


RECORD = {"messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Wie spät ist es?  \n\n 你好 🤗"},
                       {"role": "assistant", "content": "Es ist 12:30 Uhr.\n\n```py\nx = 1\n```"}]}


def test_a_second_load_reads_the_engine_cache_and_encodes_as_an_uncached_load(
        tokenizer_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SFTPACK_CACHE_DIR", "off")
    uncached = Encoder(tokenizer_dir("deepseek-v3")).encode(RECORD)
    monkeypatch.setenv("SFTPACK_CACHE_DIR", str(tmp_path))
    first = Encoder(tokenizer_dir("deepseek-v3"))
    entry = cache_entry(tmp_path)
    assert (entry / "probe-verdict.txt").read_text() == "agrees"
    assert (entry / "canonical-tokenizer.json").stat().st_size > 0
    second = Encoder(tokenizer_dir("deepseek-v3"))
    for encoder in (first, second):
        assert encoder.tokenizer_engine["engine"] == FAST
        assert encoder.encode(RECORD) == uncached


def test_a_corrupt_cache_entry_is_computed_again(
        tokenizer_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SFTPACK_CACHE_DIR", str(tmp_path))
    expected = Encoder(tokenizer_dir("deepseek-v3")).encode(RECORD)
    entry = cache_entry(tmp_path)
    (entry / "canonical-tokenizer.json").write_text('{"version": "2.0", "model": {"type": "BPE"')
    (entry / "probe-verdict.txt").write_text("garbage")
    encoder = Encoder(tokenizer_dir("deepseek-v3"))
    assert encoder.tokenizer_engine["engine"] == FAST
    assert encoder.encode(RECORD) == expected
    assert (entry / "probe-verdict.txt").read_text() == "agrees", "the verdict is checked and written again"


def test_a_cached_verdict_that_the_engines_differ_keeps_the_tokenizer_on_0_23(
        tokenizer_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SFTPACK_CACHE_DIR", str(tmp_path))
    expected = Encoder(tokenizer_dir("deepseek-v3")).encode(RECORD)
    (cache_entry(tmp_path) / "probe-verdict.txt").write_text("differs\nids differ on a probe")
    encoder = Encoder(tokenizer_dir("deepseek-v3"))
    assert encoder.tokenizer_engine == {"engine": OLD, "note": "ids differ on a probe",
                                        "texts_with_starts": 0, "starts_from_old_engine": 0}
    assert encoder.encode(RECORD) == expected


def assert_lookups_equal_the_tokenizers_library(tokenizer: Path, template: str | None = None) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    reference = tokenizers.Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    encoder = Encoder(tokenizer, template=template)
    assert encoder.vocab_size == reference.get_vocab_size(with_added_tokens=True)
    added = [token.content for token in reference.get_added_tokens_decoder().values()]
    for token in [*added, "hello", "Ġthe", "▁the", "not-a-token-anywhere"]:
        assert encoder.token_to_id(token) == reference.token_to_id(token), token


@pytest.mark.parametrize("name", JINJA_TOKENIZERS)
def test_vocabulary_size_and_token_lookups_equal_the_tokenizers_library(
        name: str, tokenizer_dir: Callable[[str], Path]) -> None:
    assert_lookups_equal_the_tokenizers_library(tokenizer_dir(name))


def test_converted_sentencepiece_vocabularies_equal_the_tokenizers_library(
        mistral_tokenizers: dict[str, Path]) -> None:
    for tokenizer in mistral_tokenizers.values():
        assert_lookups_equal_the_tokenizers_library(tokenizer, str(next(tokenizer.glob("chat_template_*.jinja"))))


def test_a_job_renders_while_the_engine_builds_and_packs_what_a_loaded_encoder_encodes(
        tokenizer_dir: Callable[[str], Path], tmp_path: Path) -> None:
    # preprocess opens the tokenizer and renders the first batches while the 1.0 engine still
    # builds on its own thread; the documents are what an Encoder (which waits for it) encodes.
    data = write_lines(tmp_path / "data.jsonl", [json.dumps(RECORD, ensure_ascii=False)] * 3)
    result = preprocess([data], tokenizer_dir("qwen3"), tmp_path / "pack", max_length=4096, threads=2)
    timing = result["timing"]
    assert timing["engine_build_s"] > 0
    assert 0 <= timing["stages"]["engine_wait"] <= timing["wall_s"]
    expected = Encoder(tokenizer_dir("qwen3")).encode(RECORD).input_ids
    pack = PackDataset(tmp_path / "pack")
    documents = []
    for index in range(len(pack)):
        row = pack[index]
        bounds = row["cu_seqlens"]
        documents += [row["input_ids"][a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert documents == [list(expected)] * 3


def test_a_tokenizer_neither_engine_loads_stops_the_job_and_leaves_no_pack(tmp_path: Path) -> None:
    tokenizer = tmp_path / "broken"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": [],
                                                          "model": {"type": "NoSuchModel"}}))
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}))
    data = write_lines(tmp_path / "data.jsonl", [json.dumps(RECORD)] * 3)
    expected = f"{tokenizer / 'tokenizer.json'} is not a tokenizer.json that the tokenizers library can load"
    with pytest.raises(TokenizerError, match="is not a tokenizer.json") as stopped:
        preprocess([data], tokenizer, tmp_path / "pack", max_length=4096)
    assert stopped.value.message.startswith(expected)
    assert not (tmp_path / "pack" / "progress.json").exists()
    assert not (tmp_path / "pack" / "manifest.json").exists()
    with pytest.raises(TokenizerError, match="is not a tokenizer.json"):
        Encoder(tokenizer)


def test_batches_rendered_while_the_engine_builds_pack_and_resume_exactly(
        corpus: Path, tokenizer_dir: Callable[[str], Path], tmp_path: Path) -> None:
    # ~13k conversations: several 4096-record batches are rendered ahead of a real tokenizer's
    # engine build. One or two threads, a whole run or one stopped at its first progress report
    # (batches still waiting for the engine) and resumed: the same bytes.
    lines = corpus.read_text().splitlines()
    data = write_lines(tmp_path / "data.jsonl", (lines * (13_000 // len(lines) + 1))[:13_000])
    settings: dict[str, Any] = {"max_length": 4096, "window": 2000, "progress_interval_ms": 0}
    tokenizer = tokenizer_dir("qwen3")
    whole = preprocess([data], tokenizer, tmp_path / "whole", threads=2, **settings)
    assert whole["manifest"]["counts"]["records_read"] == 13_000
    preprocess([data], tokenizer, tmp_path / "one", threads=1, **settings)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        preprocess([data], tokenizer, out, threads=2, progress=interrupt_at_call(1), **settings)
    assert preprocess([data], tokenizer, out, threads=2, **settings)["status"] == "resumed"
    for run in ("one", "resumed"):
        assert shard_bytes(tmp_path / run) == shard_bytes(tmp_path / "whole"), run
        assert (tmp_path / run / "rejects.jsonl").read_bytes() == (tmp_path / "whole" / "rejects.jsonl").read_bytes()

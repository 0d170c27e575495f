"""Raw text for continued pretraining (`format: text`): a document is what transformers'
`tokenizer(text)` gives (BOS where the tokenizer adds one) plus one end-of-text token, every
token trained; a document longer than max_length is cut into consecutive max_length chunks,
each packed as a document with its file:line, none lost; raw-text packs mix with chat packs."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from sftpack import ConfigError, PackDataset, PackMixture
from sftpack.preprocess import preprocess

from .conftest import DEMO, data_path, read_json, write_lines

MAX_LENGTH = 1024


def real_documents(count: int = 400) -> list[str]:
    """Documents of real English and Chinese text (LLaMA-Factory's alpaca demos), 1 to 60
    answers each: from a few dozen tokens to several thousand."""
    english = read_json(data_path("datasets", "alpaca", "alpaca_en_demo.json.gz"))
    chinese = read_json(data_path("datasets", "chinese", "alpaca_zh_demo.json.gz"))
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}".strip() for r in english + chinese]
    documents, at = [], 0
    for i in range(count):
        size = 1 + (i * 37) % 60 if i % 3 else 1 + i % 4
        documents.append("\n\n".join(texts[(at + j) % len(texts)] for j in range(size)))
        at += size
    return documents


def chunks_by_source(pack: Path) -> dict[tuple[str, int], list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    """The (ids, mask) of every document in a pack, grouped by file and line."""
    data = PackDataset(pack, verify=True)
    found: dict[tuple[str, int], list[tuple[tuple[int, ...], tuple[int, ...]]]] = defaultdict(list)
    for row in range(len(data)):
        ids, mask, cu = (data.column(row, name) for name in ("input_ids", "loss_mask", "cu_seqlens"))
        for (file, line), a, b in zip(data.sources(row), cu[:-1], cu[1:], strict=True):
            assert line is not None
            found[(file, line)].append((tuple(ids[a:b].tolist()), tuple(mask[a:b].tolist())))
    return found


def expected_ids(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer(text)["input_ids"]
    return ids if ids and ids[-1] == tokenizer.eos_token_id else [*ids, tokenizer.eos_token_id]


@pytest.mark.parametrize("name", ["qwen3", "phi-3-mini", "deepseek-v3"])
def test_documents_are_transformers_ids_plus_end_of_text_cut_into_chunks_every_token_trained(
        name: str, tmp_path: Path, tokenizer_dir: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = tokenizer_dir(name)
    reference = AutoTokenizer.from_pretrained(str(tokenizer))
    documents = real_documents()
    data = write_lines(tmp_path / "docs.jsonl", [json.dumps({"text": d}, ensure_ascii=False) for d in documents])
    result = preprocess([data], tokenizer, tmp_path / "pack", format="text", max_length=MAX_LENGTH)
    counts = result["manifest"]["counts"]
    assert counts["records_read"] == counts["packed"] == 400, "every document packed, none dropped"
    expected = {line: expected_ids(reference, text) for line, text in enumerate(documents, start=1)}
    lengths = [len(ids) for ids in expected.values()]
    assert min(lengths) < 100 and max(lengths) > 5000, "short and long documents both"
    found = chunks_by_source(tmp_path / "pack")
    assert {line for _, line in found} == set(expected)
    for (_, line), chunks in found.items():
        ids = expected[line]
        cut = [tuple(ids[i:i + MAX_LENGTH]) for i in range(0, len(ids), MAX_LENGTH)]
        assert sorted(c for c, _ in chunks) == sorted(cut), f"line {line}: its chunks are its ids"
        assert all(mask == (0, *(1,) * (len(c) - 1)) for c, mask in chunks), "all trained but each first"
    assert counts["tokens"] == sum(lengths)
    assert counts["trained_tokens"] == sum(lengths) - sum(-(-n // MAX_LENGTH) for n in lengths)


def test_plain_text_files_are_documents_and_need_format_text(tmp_path: Path) -> None:
    folder = tmp_path / "books"
    folder.mkdir()
    documents = real_documents(6)
    for i, text in enumerate(documents):
        (folder / f"book-{i}.txt").write_text(text)
    (folder / "notes.jsonl").write_text(json.dumps({"text": "a JSON document beside them"}) + "\n")
    result = preprocess([folder], DEMO, tmp_path / "pack", format="text", max_length=256)
    assert result["manifest"]["counts"]["packed"] == 7
    sources = {(Path(f).name, line) for f, line in chunks_by_source(tmp_path / "pack")}
    assert sources == {(f"book-{i}.txt", 1) for i in range(6)} | {("notes.jsonl", 1)}
    with pytest.raises(ConfigError, match=r"book-0.txt is a plain text file.*\n.*--format text"):
        preprocess([folder / "book-0.txt"], DEMO, tmp_path / "chat", max_length=256)
    chat_only = preprocess([folder], DEMO, tmp_path / "chat-folder", max_length=256, format="oasst")
    assert chat_only["manifest"]["counts"]["records_read"] == 1, "a chat job's folder leaves .txt files out"


def test_a_raw_text_job_takes_no_chat_template_and_rejects_what_is_not_text(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "fine"}), json.dumps({"text": 3}),
                                               json.dumps({"body": "no text"})])
    with pytest.raises(ConfigError, match="without a chat template"):
        preprocess([data], DEMO, tmp_path / "x", format="text", template="chatml", max_length=64)
    result = preprocess([data], DEMO, tmp_path / "pack", format="text", max_length=64)
    counts = result["manifest"]["counts"]
    assert (counts["packed"], counts["rejected"]) == (1, 2)
    assert counts["rejected_by_kind"] == {"wrong_type": 1, "missing_field": 1}
    assert result["manifest"]["template"]["name"] == "raw_text"


def test_raw_text_packs_mix_with_chat_packs(tmp_path: Path) -> None:
    text = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": d}) for d in real_documents(20)])
    chat = write_lines(tmp_path / "c.jsonl", [json.dumps({"messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) for i in range(50)])
    preprocess([text], DEMO, tmp_path / "text", format="text", max_length=256)
    preprocess([chat], DEMO, tmp_path / "chat", max_length=256)
    mixture = PackMixture([tmp_path / "text", tmp_path / "chat"])
    assert mixture.manifest["template"]["name"] != "raw_text", "chat formatting comes from the chat pack"
    assert len(mixture) > 0


@pytest.mark.parametrize("single", ["<s> $A", "<s> $A </s>"])
def test_a_tokenizer_that_adds_bos_or_eos_itself_gets_them_as_transformers_does(
        single: str, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    documents = real_documents(30)
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.train_from_iterator(documents, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", 1), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=trained, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(tmp_path / "tok"))
    reference = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": d}, ensure_ascii=False) for d in documents])
    preprocess([data], tmp_path / "tok", tmp_path / "pack", format="text", max_length=100_000)
    found = chunks_by_source(tmp_path / "pack")
    for line, text in enumerate(documents, start=1):
        [(ids, _)] = found[(str(data), line)]
        assert list(ids) == expected_ids(reference, text)
        assert ids[0] == 1 and ids[-1] == 2 and ids[-2] != 2, "BOS first, one end-of-text last"

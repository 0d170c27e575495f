"""Columnar inputs — Parquet files and folders, Arrow IPC files, `datasets` save_to_disk folders —
give the same documents as the same records in JSONL, with the same validation, rejects and
provenance (file and row), and bad files are reported, never half-read in silence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from sftpack import InputError, PackDataset, check
from sftpack.preprocess import preprocess

from .conftest import DEMO, data_path, document_tokens, read_jsonl, write_lines


def real_records() -> list[dict[str, Any]]:
    """Real conversations (XTuner's 199, tool-call turns folded in), the last with a
    `loss: false` reply."""
    return read_jsonl(data_path("goldens", "xtuner", "input.jsonl"))


def as_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records as a table the way the Hub stores chat data: `messages` a list<struct>, the
    optional `loss` null where a message has none."""
    rows = [{"messages": [{"role": m["role"], "content": m["content"], "loss": m.get("loss")}
                          for m in r["messages"]]} for r in records]
    return pa.Table.from_pylist(rows)


def test_jsonl_three_parquet_files_an_arrow_file_and_a_saved_dataset_give_the_same_document_tokens(
        tmp_path: Path, tokenizer_dir: Any) -> None:
    records = real_records()
    tokenizer = tokenizer_dir("qwen3")
    jsonl = write_lines(tmp_path / "all.jsonl", [json.dumps(r, ensure_ascii=False) for r in records])
    folder = tmp_path / "parquet"
    folder.mkdir()
    for i, part in enumerate((records[:70], records[70:140], records[140:])):
        pq.write_table(as_table(part), folder / f"part-{i}.parquet", row_group_size=16, compression="zstd")
    feather.write_feather(as_table(records), tmp_path / "all.arrow")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset(as_table(records)).save_to_disk(str(tmp_path / "saved"), max_shard_size="20KB")
    assert len(list((tmp_path / "saved").glob("*.arrow"))) > 1, "several Arrow shards, read in their order"
    preprocess([jsonl], tokenizer, tmp_path / "p-jsonl", max_length=4096)
    expected = document_tokens(tmp_path / "p-jsonl")
    assert 0 < len(expected) <= len(records)
    for name, inputs in (("parquet", [folder]), ("arrow", [tmp_path / "all.arrow"]), ("saved", [tmp_path / "saved"])):
        result = preprocess(inputs, tokenizer, tmp_path / f"p-{name}", max_length=4096)
        assert document_tokens(tmp_path / f"p-{name}") == expected, name
        counts = result["manifest"]["counts"]
        assert counts["records_read"] == counts["packed"] + counts["rejected"] + counts["dropped"] == len(records)


def test_each_document_points_at_its_file_and_row(tmp_path: Path) -> None:
    records = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
               for i in range(40)]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet", row_group_size=7)
    preprocess([tmp_path / "d.parquet"], DEMO, tmp_path / "pack", max_length=4096, pack=False)
    pack = PackDataset(tmp_path / "pack")
    rows = [pack.sources(i)[0] for i in range(len(pack))]
    assert rows == [(str(tmp_path / "d.parquet"), n) for n in range(1, 41)], "row n of the file is its 1-based row"


def test_bad_rows_are_rejected_with_file_row_and_field_and_nothing_is_lost(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    wrong_type = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    table = pa.Table.from_pylist([good, wrong_type, good])
    pq.write_table(table, tmp_path / "roles.parquet")
    # a column of the wrong type altogether, and a file without the column a format needs
    pq.write_table(pa.table({"messages": [3, 4]}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), tmp_path / "other.parquet")
    pq.write_table(pa.table({"messages": [good["messages"]], "audio": [b"\x00\x01"]}), tmp_path / "bytes.parquet")
    report = check([tmp_path / n for n in ("roles.parquet", "ints.parquet", "other.parquet", "bytes.parquet")], DEMO)
    assert report["records"] == 7 and report["encoded"] == 2
    assert report["records"] == report["encoded"] + report["rejected"] + report["dropped"]
    problems = {kind: entry["examples"][0] for kind, entry in report["problems"].items()}
    assert problems["unknown_role"]["line"] == 2 and problems["unknown_role"]["path"] == "messages[1].role"
    assert problems["unknown_role"]["file"] == str(tmp_path / "roles.parquet")
    assert problems["unsupported_column_type"]["path"] == "audio"
    assert (problems["wrong_type"]["path"], problems["wrong_type"]["line"]) == ("messages", 1)
    assert problems["wrong_type"]["file"].endswith("ints.parquet")
    assert problems["unknown_format"]["file"].endswith("other.parquet")
    assert '"question"' in problems["unknown_format"]["message"], "names the columns it found"
    out = preprocess([tmp_path / "roles.parquet", tmp_path / "ints.parquet"], DEMO, tmp_path / "pack", max_length=256)
    rejects = [json.loads(line) for line in (tmp_path / "pack" / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["line"]) for r in rejects] == [
        ("roles.parquet", 2), ("ints.parquet", 1), ("ints.parquet", 2)]
    assert json.loads(rejects[0]["record"])["messages"][1]["role"] == "bot", "the row as read"
    assert out["manifest"]["counts"]["packed"] == 2


def test_nulls_read_as_absent_fields(tmp_path: Path, demo_tokenizer: Path) -> None:
    # A writer that unified schemas leaves optional fields null: `loss` unset on most messages,
    # `name` unset everywhere; both read as absent, so the defaults apply.
    rows = [{"messages": [{"role": "user", "content": "hi", "loss": None, "name": None},
                          {"role": "assistant", "content": "hello", "loss": None, "name": None}]},
            {"messages": [{"role": "user", "content": "hi", "loss": None, "name": None},
                          {"role": "assistant", "content": "hello", "loss": False, "name": None},
                          {"role": "user", "content": "again", "loss": None, "name": None},
                          {"role": "assistant", "content": "sure", "loss": None, "name": None}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    plain = [{"messages": [{k: v for k, v in m.items() if v is not None} for m in r["messages"]]} for r in rows]
    write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in plain])
    preprocess([tmp_path / "d.parquet"], demo_tokenizer, tmp_path / "a", max_length=256)
    preprocess([tmp_path / "d.jsonl"], demo_tokenizer, tmp_path / "b", max_length=256)
    assert document_tokens(tmp_path / "a") == document_tokens(tmp_path / "b")


def test_a_truncated_file_stops_the_job_naming_it(tmp_path: Path, demo_tokenizer: Path) -> None:
    records = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
               for i in range(100)]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    data = (tmp_path / "d.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.parquet is not a readable Parquet file") as error:
        preprocess([tmp_path / "cut.parquet"], demo_tokenizer, tmp_path / "pack", max_length=256)
    assert error.value.hint and "download it again" in error.value.hint
    assert not (tmp_path / "pack" / "manifest.json").exists()
    (tmp_path / "cut.arrow").write_bytes(b"ARROW1\x00\x00garbage")
    with pytest.raises(InputError, match=r"cut\.arrow is not a readable Arrow IPC file"):
        check([tmp_path / "cut.arrow"], demo_tokenizer)


def test_a_dataset_dict_folder_asks_for_a_split(tmp_path: Path, demo_tokenizer: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 4
    split = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match="DatasetDict with the splits") as error:
        check([tmp_path / "dd"], demo_tokenizer)
    assert error.value.hint and str(tmp_path / "dd" / "train") in error.value.hint
    assert check([tmp_path / "dd" / "train"], demo_tokenizer)["encoded"] == 4


def test_a_map_function_reads_parquet_rows_and_progress_counts_file_bytes(tmp_path: Path) -> None:
    (tmp_path / "qa.py").write_text(
        "def qa(row):\n"
        "    return {'messages': [{'role': 'user', 'content': row['q']},\n"
        "                         {'role': 'assistant', 'content': row['a']}]}\n")
    rows = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(500)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "qa.parquet", row_group_size=100, compression="zstd")
    reports: list[dict[str, Any]] = []
    result = preprocess([tmp_path / "qa.parquet"], DEMO, tmp_path / "pack", max_length=256,
                        map_fn=f"{tmp_path / 'qa.py'}:qa", progress=reports.append, progress_interval_ms=0)
    assert result["manifest"]["counts"]["packed"] == 500
    size = (tmp_path / "qa.parquet").stat().st_size
    assert reports and all(0 <= r["bytes_read"] <= size for r in reports), "the file's bytes, not its rows as text"
    assert reports[-1]["bytes_total"] == size

"""Partitioned runs: N parts prepared separately and merged hold exactly the documents (ids,
masks, provenance), rejects and validation split of one unpartitioned run; the merge refuses
parts that are missing, repeated, unfinished or of another job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sftpack import ConfigError
from sftpack.cli import main
from sftpack.data.pack import PackDataset
from sftpack.parts import merge_packs
from sftpack.preprocess import preprocess

from .conftest import DEMO
from .test_preprocess import dataset, rejected_lines

Document = tuple[str, int, tuple[int, ...], tuple[int, ...]]


def documents(pack: Path) -> list[Document]:
    """(file, line, ids, trained mask) of every document in a pack, sorted."""
    data = PackDataset(pack, verify=True)
    found = []
    for row in range(len(data)):
        ids, mask, cu = (data.column(row, name) for name in ("input_ids", "loss_mask", "cu_seqlens"))
        for (file, line), start, end in zip(data.sources(row), cu[:-1], cu[1:], strict=True):
            found.append((file, line, tuple(ids[start:end].tolist()), tuple(mask[start:end].tolist())))
    return sorted(found)


def prepare_parts(data: Path, root: Path, count: int, **options: Any) -> list[Path]:
    return [part for part, _ in prepare_parts_reporting(data, root, count, **options)]


def prepare_parts_reporting(data: Path, root: Path, count: int, **options: Any) -> list[tuple[Path, dict[str, Any]]]:
    """Each part's folder and what its run reported."""
    parts = [root / f"part-{i}" for i in range(count)]
    return [(part, preprocess([data], DEMO, part, max_length=256, window=64, num_shards=count, shard_index=index,
                              **options))
            for index, part in enumerate(parts)]


def test_merged_parts_hold_exactly_the_documents_of_one_unpartitioned_run(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    whole = tmp_path / "whole"
    preprocess([data], DEMO, whole, max_length=256, window=64, val_size=0.1, seed=5)
    reported = prepare_parts_reporting(data, tmp_path, 3, val_size=0.1, seed=5)
    parts = [part for part, _ in reported]
    assert all(r["manifest"]["counts"]["records_read"] > 100 for _, r in reported), "every part has work"
    bytes_read = sum(r["timing"]["input_bytes_read"] for _, r in reported)
    assert bytes_read <= 1.25 * data.stat().st_size, "the parts together read the corpus about once"

    merged = merge_packs(list(reversed(parts)), tmp_path / "merged")["manifest"]
    for split in ("", "validation"):
        assert documents(tmp_path / "merged" / split) == documents(whole / split)
        assert rejected_lines(tmp_path / "merged" / split) == rejected_lines(whole / split)
    expected = json.loads((whole / "manifest.json").read_text())
    for name in ("records_read", "packed", "rejected", "dropped", "rejected_by_kind", "dropped_by_reason",
                 "tokens", "trained_tokens"):
        assert merged["counts"][name] == expected["counts"][name], name
    assert merged["validation"]["records"] == expected["validation"]["records"]
    assert 40 <= expected["validation"]["records"] <= 80, "about a tenth of 600"
    assert merged["counts"]["packing_efficiency"] > 0.9
    assert [p["partition"]["index"] for p in merged["merged_from"]] == [0, 1, 2]
    assert "partition" not in merged["config"]


def test_merging_again_is_up_to_date_and_parts_resume_like_any_run(tmp_path: Path) -> None:
    data = dataset(tmp_path, n=200)
    parts = prepare_parts(data, tmp_path, 2)
    assert merge_packs(parts, tmp_path / "merged")["status"] == "done"
    assert merge_packs(parts, tmp_path / "merged")["status"] == "up to date"
    again = preprocess([data], DEMO, parts[1], max_length=256, window=64, num_shards=2, shard_index=1)
    assert again["status"] == "up to date"


def mixed_inputs(root: Path) -> list[Path]:
    """A JSON Lines file (read in byte ranges, bad records late in it, blank lines and CRLF
    line ends), a Parquet file of many row groups and a JSON array (read whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .test_preprocess import conversation

    lines = [conversation(i) for i in range(900)]
    lines[700] = '{"messages": [{"role": "user", "content": "x", "loss": False}]}'  # invalid JSON
    lines[850] = json.dumps({"messages": [{"role": "user", "content": "only a question"}]})  # nothing trained
    lines[400] += "\n"  # a blank line after it shifts every later line number
    jsonl = root / "chat.jsonl"
    jsonl.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    records = [json.loads(conversation(1000 + i)) for i in range(300)]
    pq.write_table(pa.Table.from_pylist(records), root / "chat.parquet", row_group_size=25)
    array = root / "chat.json"
    array.write_text(json.dumps([json.loads(conversation(2000 + i)) for i in range(50)]))
    return [jsonl, root / "chat.parquet", array]


def test_parts_read_their_own_byte_ranges_and_row_groups_and_merge_to_the_documents_of_one_run(
        tmp_path: Path) -> None:
    inputs = mixed_inputs(tmp_path)
    corpus_bytes = sum(p.stat().st_size for p in inputs)
    whole = tmp_path / "whole"
    options: dict[str, Any] = {"max_length": 256, "window": 64, "val_size": 40, "seed": 2}
    expected_run = preprocess(inputs, DEMO, whole, **options)
    counted = sum(p.stat().st_size for p in inputs if p.suffix != ".parquet")  # `val_size: 40` counts JSON records
    once = corpus_bytes + counted
    assert once <= expected_run["timing"]["input_bytes_read"] <= 1.03 * once, "one read, the Parquet footer again"
    for count in (2, 5):
        parts = [tmp_path / f"{count}-part-{i}" for i in range(count)]
        reported = [preprocess(inputs, DEMO, part, num_shards=count, shard_index=i, **options)
                    for i, part in enumerate(parts)]
        manifest = reported[0]["manifest"]
        spans = {unit["span"] for unit in manifest["units"]}
        assert spans == {"bytes", "row_group", "file"}, "the JSON Lines file is cut by bytes, the Parquet by groups"
        records = [r["manifest"]["counts"]["records_read"] + r["manifest"]["validation"]["records"] for r in reported]
        assert sum(records) == 1250 and min(records) > 0, records
        framing_reads = sum(r["timing"]["input_bytes_read"] for r in reported) - count * counted
        assert framing_reads <= 1.25 * corpus_bytes, "together the parts read the corpus about once"
        merged = tmp_path / f"merged-{count}"
        merge_packs(parts, merged)
        for split in ("", "validation"):
            assert documents(merged / split) == documents(whole / split), (count, split)
            assert rejected_lines(merged / split) == rejected_lines(whole / split), (count, split)
        rejects = [json.loads(line) for line in (merged / "rejects.jsonl").read_text().splitlines()]
        assert {(r["line"], r["kind"]) for r in rejects} >= {(702, "invalid_json"), (852, "no_trained_tokens")}, (
            "lines numbered in the file, the blank line counted")
        assert all("unit" not in r for r in rejects)


def test_merge_refuses_missing_repeated_unfinished_or_foreign_parts(tmp_path: Path) -> None:
    data = dataset(tmp_path, n=120)
    parts = prepare_parts(data, tmp_path / "a", 3)
    with pytest.raises(ConfigError, match=r"parts \[2\] of 3 are missing"):
        merge_packs(parts[:2], tmp_path / "out")
    with pytest.raises(ConfigError, match="are both part 1 of 3"):
        merge_packs([parts[0], parts[1], parts[1]], tmp_path / "out")
    other = prepare_parts(data, tmp_path / "b", 3, seed=9)
    with pytest.raises(ConfigError, match="not parts of one job"):
        merge_packs([parts[0], parts[1], other[2]], tmp_path / "out")
    (other[2] / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="not a finished pack"):
        merge_packs([other[0], other[1], other[2]], tmp_path / "out")
    whole = tmp_path / "whole"
    preprocess([data], DEMO, whole, max_length=256)
    with pytest.raises(ConfigError, match="a whole pack, not a part"):
        merge_packs([whole], tmp_path / "out")


def test_merge_never_deletes_a_folder_of_other_files(tmp_path: Path) -> None:
    parts = prepare_parts(dataset(tmp_path, n=60), tmp_path, 2)
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(ConfigError, match="not a pack's"):
        merge_packs(parts, precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_shard_index_outside_the_number_of_shards_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shard_index"):
        preprocess([dataset(tmp_path, n=30)], DEMO, tmp_path / "out", max_length=256, num_shards=2, shard_index=2)


def test_the_command_line_prepares_parts_and_merges_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset(tmp_path, n=100)
    for index in range(2):
        assert main(["preprocess", str(data), "--tokenizer", str(DEMO), "--out", str(tmp_path / f"p{index}"),
                     "--max-length", "256", "--num-shards", "2", "--shard-index", str(index)]) == 0
    assert "part 1 of 2" in capsys.readouterr().out
    assert main(["pack", "merge", str(tmp_path / "p1"), str(tmp_path / "p0"), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "done:" in out and "from 2 parts" in out and "records read 100 = packed 98" in out

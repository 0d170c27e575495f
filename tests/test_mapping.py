"""Map functions: records of any shape reach the engine through a user's Python callable, in a
streaming pre-pass, and every record is still either packed or rejected with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftpack import ConfigError, check
from sftpack.cli import main
from sftpack.mapping import iter_records, load_map_fn
from sftpack.preprocess import preprocess

from .conftest import DEMO

MAP_FN = '''
def qa(record):
    if record.get("skip"):
        return None
    return {"messages": [{"role": "user", "content": record["q"]},
                         {"role": "assistant", "content": record["a"]}]}
'''


@pytest.fixture
def custom(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "qa.py").write_text(MAP_FN)
    records = [{"q": f"question {i}?", "a": f"answer {i}."} for i in range(20)]
    records[3] = {"q": "no answer"}  # the map function raises KeyError
    records[7] = {"skip": True, "q": "x", "a": "y"}  # the map function returns None
    (tmp_path / "data.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps(r) for r in records[:5]) + "\n")
    return {"root": tmp_path, "fn": tmp_path / "qa.py"}


def test_preprocess_maps_packs_and_accounts_for_every_record(custom: dict[str, Path]) -> None:
    root = custom["root"]
    result = preprocess([root / "data.json", root / "more.jsonl"], DEMO, root / "pack", max_length=256,
                        map_fn=f"{custom['fn']}:qa")
    counts = result["manifest"]["counts"]
    assert counts["records_read"] == 25
    assert counts["packed"] == 22 and counts["rejected_by_kind"] == {"map_fn_error": 3}
    assert counts["records_read"] == counts["packed"] + counts["rejected"] + counts["dropped"]
    rejects = [json.loads(line) for line in (root / "pack" / "rejects.jsonl").read_text().splitlines()]
    messages = " | ".join(json.dumps(r) for r in rejects)
    assert "data.json:5" in messages and "KeyError" in messages  # record 3 sits on line 5 of the array file
    assert "data.json:9" in messages and "returned None" in messages
    assert "more.jsonl:4" in messages
    assert sorted(p.name for p in (root / "pack-mapped").iterdir()) == ["0000-data.jsonl", "0001-more.jsonl"]


def test_check_and_inspect_take_a_map_function_from_the_command_line(custom: dict[str, Path],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = str(custom["root"] / "data.json")
    assert main(["check", data, "--tokenizer", str(DEMO), "--map-fn", f"{custom['fn']}:qa"]) == 1  # 2 rejected
    assert "map_fn_error" in capsys.readouterr().out
    assert main(["inspect", data, "--tokenizer", str(DEMO), "--map-fn", f"{custom['fn']}:qa", "-n", "1"]) == 0
    assert "question 0?" in capsys.readouterr().out


def test_builtin_map_functions(tmp_path: Path) -> None:
    record = {"system_prompt": "Be brief.", "question": "2+2?", "response": "4."}
    (tmp_path / "orca.jsonl").write_text(json.dumps(record) + "\n")
    report = check([tmp_path / "orca.jsonl"], DEMO, map_fn="openorca")
    assert (report["records"], report["encoded"], report["rejected"]) == (1, 1, 0)


def test_a_large_json_array_streams_across_buffer_boundaries(tmp_path: Path) -> None:
    records = [{"q": "x" * 1000, "i": i} for i in range(3000)]  # ~3 MB: several reads of the 1 MB buffer
    (tmp_path / "big.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]")
    seen = list(iter_records(tmp_path / "big.json"))
    assert [r["i"] for _, r in seen] == list(range(3000))
    assert [line for line, _ in seen] == list(range(2, 3002))


def test_a_bad_spec_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected module:function"):
        load_map_fn("no_colon_and_not_builtin")
    with pytest.raises(ConfigError, match="no file"):
        load_map_fn(f"{tmp_path}/missing.py:f")
    with pytest.raises(ConfigError, match="has no function"):
        load_map_fn("json:not_a_function")

"""Map functions: records of any shape reach the engine through a user's Python callable, run as
a stage of the engine's one streaming loop. Every record keeps its original file:line, is packed
or rejected with its reason, and nothing is written in between; the key sees the function, so
a re-run does nothing without calling it, and an interrupted run resumes to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sftpack import ConfigError, PackDataset, check
from sftpack.cli import main
from sftpack.mapping import MapFunction, load_map_fn
from sftpack.preprocess import preprocess

from .conftest import DEMO

MAP_FN = '''
import os

def qa(record):
    calls = os.environ.get("SFTPACK_TEST_CALLS")
    if calls:
        with open(calls, "a") as log:
            log.write("x")
    if record.get("skip"):
        return None
    if record.get("q") == os.environ.get("SFTPACK_TEST_STOP_AT"):
        raise KeyboardInterrupt
    return {"messages": [{"role": "user", "content": record["q"]},
                         {"role": "assistant", "content": record["a"]}]}
'''


@pytest.fixture
def custom(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "qa.py").write_text(MAP_FN)
    records: list[dict[str, Any]] = [{"q": f"question {i}?", "a": f"answer {i}."} for i in range(20)]
    records[3] = {"q": "no answer"}  # the map function raises KeyError
    records[7] = {"skip": True, "q": "x", "a": "y"}  # the map function returns None
    records[9] = {"q": "", "a": ""}  # mapped, then the engine finds an empty reply
    (tmp_path / "data.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps(r) for r in records[:5]) + "\n")
    return {"root": tmp_path, "fn": tmp_path / "qa.py", "spec": Path(f"{tmp_path / 'qa.py'}:qa")}


def rejects(pack: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (pack / "rejects.jsonl").read_text().splitlines()]


def test_every_record_is_packed_or_rejected_where_it_was_read(custom: dict[str, Path]) -> None:
    root = custom["root"]
    result = preprocess([root / "data.json", root / "more.jsonl"], DEMO, root / "pack", max_length=256,
                        map_fn=str(custom["spec"]))
    counts = result["manifest"]["counts"]
    assert counts["records_read"] == 25
    assert counts["packed"] == 21 and counts["rejected_by_kind"] == {"map_fn_error": 3, "empty_assistant": 1}
    assert counts["records_read"] == counts["packed"] + counts["rejected"] + counts["dropped"]
    where = {(Path(r["file"]).name, r["line"]): r for r in rejects(root / "pack")}
    assert set(where) == {("data.json", 5), ("data.json", 9), ("data.json", 11), ("more.jsonl", 4)}
    assert "KeyError" in where["data.json", 5]["problems"][0]["message"]
    assert json.loads(where["data.json", 5]["record"]) == {"q": "no answer"}, "the record as read"
    assert "returned None" in where["data.json", 9]["problems"][0]["message"]
    assert json.loads(where["data.json", 11]["mapped"])["messages"][1]["content"] == "", "what the function made"
    inputs = [Path(i["path"]).name for i in result["manifest"]["inputs"]]
    assert inputs == ["data.json", "more.jsonl"], "the manifest names the original files"
    pack = PackDataset(root / "pack")
    placed = {source for i in range(len(pack)) for source in pack.sources(i)}
    assert (str(root / "data.json"), 0) in placed, "source_line: the element index in the original array"
    assert not any(p.name.endswith("-mapped") for p in root.iterdir()), "no intermediate copies"


def test_a_rerun_is_a_no_op_without_calling_the_function(custom: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("SFTPACK_TEST_CALLS", str(calls))
    args: dict[str, Any] = {"max_length": 256, "map_fn": str(custom["spec"])}
    data = [custom["root"] / "data.json"]
    assert preprocess(data, DEMO, tmp_path / "pack", **args)["status"] == "done"
    assert len(calls.read_text()) == 20
    assert preprocess(data, DEMO, tmp_path / "pack", **args)["status"] == "up to date"
    assert len(calls.read_text()) == 20, "the key was checked before any record was mapped"
    custom["fn"].write_text(MAP_FN.replace("answer", "reply") + "\n# edited\n")
    with pytest.raises(ConfigError, match="other inputs or settings"):
        preprocess(data, DEMO, tmp_path / "pack", **args)


def test_an_interrupted_run_resumes_to_the_same_bytes(custom: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    records = [{"q": f"question {i}?", "a": "answer " * (i % 13)} for i in range(9000)]
    data = tmp_path / "big.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    args: dict[str, Any] = {"max_length": 256, "window": 100, "map_fn": str(custom["spec"]), "val_size": 0.01}
    whole = preprocess([data], DEMO, tmp_path / "whole", **args)["manifest"]
    monkeypatch.setenv("SFTPACK_TEST_STOP_AT", "question 8500?")  # Ctrl-C inside the map function
    with pytest.raises(KeyboardInterrupt):
        preprocess([data], DEMO, tmp_path / "resumed", **args)
    done = json.loads((tmp_path / "resumed" / "progress.json").read_text())["records_consumed"]
    assert 4096 < done <= 8192, "stopped while mapping the third batch"
    monkeypatch.delenv("SFTPACK_TEST_STOP_AT")
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("SFTPACK_TEST_CALLS", str(calls))
    resumed = preprocess([data], DEMO, tmp_path / "resumed", **args)
    assert resumed["status"] == "resumed" and resumed["manifest"]["counts"] == whole["counts"]
    for part in ("", "validation"):
        for name in ("shard-00000.arrow", "rejects.jsonl"):
            assert (tmp_path / "resumed" / part / name).read_bytes() == (tmp_path / "whole" / part / name).read_bytes()
    # what was done is not mapped again, but for the file's first batch (4096 records), which
    # detecting the file's format needs
    assert len(calls.read_text()) == 4096 + (9000 - done)


def test_check_and_inspect_take_a_map_function_from_the_command_line(custom: dict[str, Path],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = str(custom["root"] / "data.json")
    assert main(["check", data, "--tokenizer", str(DEMO), "--map-fn", str(custom["spec"])]) == 1  # 3 rejected
    out = capsys.readouterr().out
    assert "map_fn_error" in out and "data.json:5" in out
    assert main(["inspect", data, "--tokenizer", str(DEMO), "--map-fn", str(custom["spec"]), "-n", "1"]) == 0
    assert "question 0?" in capsys.readouterr().out


def test_builtin_map_functions(tmp_path: Path) -> None:
    record = {"system_prompt": "Be brief.", "question": "2+2?", "response": "4."}
    (tmp_path / "orca.jsonl").write_text(json.dumps(record) + "\n")
    report = check([tmp_path / "orca.jsonl"], DEMO, map_fn="openorca")
    assert (report["records"], report["encoded"], report["rejected"]) == (1, 1, 0)


def test_the_function_answers_per_record(custom: dict[str, Path]) -> None:
    function = MapFunction(str(custom["spec"]))
    answers = function(['{"q": "a", "a": "b"}', "{not json", '{"skip": true}', '{"q": 1}'])
    assert [ok for ok, _ in answers] == [True, False, False, False]
    assert json.loads(answers[0][1])["messages"][0]["content"] == "a"
    assert "not valid JSON" in answers[1][1] and "returned None" in answers[2][1] and "KeyError" in answers[3][1]
    assert MapFunction(str(custom["spec"])).identity == function.identity
    assert len(function.identity["fingerprint"]) == 64


def test_a_bad_spec_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected module:function"):
        load_map_fn("no_colon_and_not_builtin")
    with pytest.raises(ConfigError, match="no file"):
        load_map_fn(f"{tmp_path}/missing.py:f")
    with pytest.raises(ConfigError, match="has no function"):
        load_map_fn("json:not_a_function")

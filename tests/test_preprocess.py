"""sftpack preprocess: the pack format's invariants, reconciliation, determinism and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sftpack import ConfigError, InputError
from sftpack.preprocess import preprocess

from .conftest import DEMO, write_lines

pa = pytest.importorskip("pyarrow")


def conversation(i: int) -> str:
    turns = [{"role": "user", "content": f"What is {i} plus {i}?"},
             {"role": "assistant", "content": f"{i} plus {i} is {2 * i}." + " Indeed." * (i % 17)}]
    if i % 5 == 0:
        turns += [{"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "You are welcome."}]
    return json.dumps({"messages": turns})


def dataset(tmp_path: Path, n: int = 600) -> Path:
    lines = [conversation(i) for i in range(n)]
    lines[10] = '{"messages": [{"role": "user", "content": "x", "loss": False}]}'  # invalid JSON
    lines[20] = json.dumps({"messages": [{"role": "user", "content": "only a question"}]})  # nothing trained
    return write_lines(tmp_path / "data.jsonl", lines)


def read_rows(out: Path) -> list[dict[str, Any]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows: list[dict[str, Any]] = []
    for shard in manifest["shards"]:
        table = pa.ipc.open_file(pa.memory_map(str(out / shard["file"]))).read_all()
        rows += table.to_pylist()
    return rows


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.arrow"))}


def test_every_record_is_packed_or_rejected_and_counts_reconcile(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    result = preprocess([data], DEMO, tmp_path / "out", max_length=256, window=100)
    counts = result["manifest"]["counts"]
    assert counts["records_read"] == 600
    assert counts["records_read"] == counts["packed"] + counts["rejected"] + counts["dropped"]
    assert (counts["rejected"], counts["dropped"]) == (1, 1)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["status"], r["kind"]) for r in rejects] == [
        (11, "rejected", "invalid_json"), (21, "dropped", "no_trained_tokens")]
    assert '"loss": False' in rejects[0]["record"]
    rows = read_rows(tmp_path / "out")
    placed = [(f, n) for row in rows for f, n in zip(row["source_file"], row["source_line"], strict=True)]
    assert sorted(placed) == sorted((0, n) for n in range(1, 601) if n not in (11, 21))  # each exactly once


def test_rows_keep_the_pack_format_invariants(tmp_path: Path) -> None:
    preprocess([dataset(tmp_path)], DEMO, tmp_path / "out", max_length=256, window=100)
    rows = read_rows(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == "sftpack-pack" and manifest["format_version"] == 2
    assert sum(len(r["input_ids"]) for r in rows) == manifest["counts"]["tokens"]
    for row in rows:
        cu = row["cu_seqlens"]
        assert cu[0] == 0 and cu[-1] == len(row["input_ids"]) <= 256
        assert all(a < b for a, b in zip(cu, cu[1:], strict=False))
        assert len(row["loss_mask"]) == len(row["input_ids"])
        assert len(row["source_file"]) == len(row["source_line"]) == len(cu) - 1
        assert all(row["loss_mask"][start] == 0 for start in cu[:-1])  # no cross-document prediction
    assert manifest["counts"]["packing_efficiency"] > 0.95


def test_no_pack_keeps_input_order_one_conversation_per_row(tmp_path: Path) -> None:
    preprocess([dataset(tmp_path, 50)], DEMO, tmp_path / "out", max_length=256, pack=False)
    lines = [row["source_line"] for row in read_rows(tmp_path / "out")]
    assert lines == [[n] for n in range(1, 51) if n not in (11, 21)]


def test_output_is_identical_for_any_thread_count(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    outputs = []
    for threads in (1, 2, 3):
        out = tmp_path / f"out{threads}"
        preprocess([data], DEMO, out, max_length=256, window=64, threads=threads, shard_size_mb=1)
        outputs.append((shard_bytes(out), (out / "rejects.jsonl").read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0][0]) >= 2


def test_check_and_preprocess_share_one_default_max_length(tmp_path: Path) -> None:
    from sftpack import _core, check

    default = json.loads(_core.settings_defaults())["max_length"]
    assert default == 4096
    long = json.dumps({"messages": [{"role": "user", "content": "hi " * 3000}, {"role": "assistant", "content": "ok"}]})
    data = write_lines(tmp_path / "d.jsonl", [long, *(conversation(i) for i in range(3))])
    result = preprocess([data], DEMO, tmp_path / "out")
    assert result["manifest"]["max_length"] == default
    assert result["manifest"]["counts"]["dropped"] == 1, "the same record preprocess drops ..."
    report = check([data], DEMO)
    assert report["max_length"] == default and report["drops"]["too_long"]["count"] == 1, "... check counts"


def test_rerun_is_a_no_op_and_other_settings_need_overwrite(tmp_path: Path) -> None:
    data, out = dataset(tmp_path, 50), tmp_path / "out"
    assert preprocess([data], DEMO, out, max_length=256)["status"] == "done"
    assert preprocess([data], DEMO, out, max_length=256, threads=1)["status"] == "up to date"
    with pytest.raises(ConfigError, match="`overwrite: true`"):
        preprocess([data], DEMO, out, max_length=128)
    assert preprocess([data], DEMO, out, max_length=128, overwrite=True)["status"] == "done"


def interrupt_at_call(n: int) -> Callable[[dict[str, Any]], None]:
    """A progress callback that stops the run (as Ctrl-C does) on its n-th call."""
    calls = 0

    def progress(_: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            raise KeyboardInterrupt

    return progress


def test_interrupted_run_resumes_to_identical_output(tmp_path: Path) -> None:
    data = dataset(tmp_path, 13_000)  # progress is reported between batches of 4096 records
    settings: dict[str, Any] = {"max_length": 256, "window": 50, "progress_interval_ms": 0}
    preprocess([data], DEMO, tmp_path / "whole", **settings)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        preprocess([data], DEMO, out, progress=interrupt_at_call(3), **settings)
    assert (out / "progress.json").exists() and not (out / "manifest.json").exists()
    result = preprocess([data], DEMO, out, **settings)
    assert result["status"] == "resumed"
    assert shard_bytes(out) == shard_bytes(tmp_path / "whole")
    assert (out / "rejects.jsonl").read_bytes() == (tmp_path / "whole" / "rejects.jsonl").read_bytes()
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert result["manifest"]["counts"] == whole["counts"]


def test_killed_process_resumes_to_identical_output(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "big.jsonl", [conversation(i) for i in range(30_000)])
    args = [sys.executable, "-m", "sftpack", "preprocess", str(data), "--tokenizer", str(DEMO),
            "--max-length", "512", "--window", "2000", "--threads", "1"]
    subprocess.run([*args, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    out = tmp_path / "killed"
    process = subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "progress.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if process.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    resumed = subprocess.run([*args, "--out", str(out)], check=True, capture_output=True, text=True)
    assert resumed.stdout.startswith("resumed")
    assert shard_bytes(out) == shard_bytes(tmp_path / "whole")


def test_yaml_config_with_flag_overrides(tmp_path: Path) -> None:
    data = dataset(tmp_path, 40)
    config = tmp_path / "prep.yaml"
    config.write_text(f"data: {data}\ntokenizer: {DEMO}\nout: {tmp_path / 'out'}\nmax_length: 128\nno_such: 1\n")
    bad = subprocess.run([sys.executable, "-m", "sftpack", "preprocess", "--config", str(config)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown settings ['no_such']" in bad.stderr
    config.write_text(f"data: {data}\ntokenizer: {DEMO}\nout: {tmp_path / 'out'}\nmax-length: 128\n")
    ok = subprocess.run([sys.executable, "-m", "sftpack", "preprocess", "--config", str(config),
                         "--max-length", "200"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["max_length"] == 200


def placed_documents(out: Path) -> set[tuple[int, int]]:
    return {(f, n) for row in read_rows(out) for f, n in zip(row["source_file"], row["source_line"], strict=True)}


def rejected_lines(out: Path) -> set[tuple[int, int]]:
    lines = (out / "rejects.jsonl").read_text().splitlines()
    return {(r["file_index"], r["line"]) for r in map(json.loads, lines)}


def test_validation_split_is_disjoint_from_training_and_counts_reconcile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = preprocess([dataset(tmp_path)], DEMO, out, max_length=256, window=100, val_size=0.1, seed=3)
    validation = out / "validation"
    train_docs, val_docs = placed_documents(out), placed_documents(validation)
    assert train_docs and val_docs and not train_docs & val_docs, "no document is in both packs"
    everything = train_docs | val_docs | rejected_lines(out) | rejected_lines(validation)
    assert everything == {(0, n) for n in range(1, 601)}, "every record is somewhere, once"
    manifest = result["manifest"]
    held_out = json.loads((validation / "manifest.json").read_text())
    assert manifest["validation"]["records"] == held_out["counts"]["records_read"]
    assert 40 <= held_out["counts"]["records_read"] <= 80, "each record held out with probability 0.1"
    assert manifest["counts"]["records_read"] + held_out["counts"]["records_read"] == 600
    assert (manifest["split"], held_out["split"]) == ("train", "validation")
    for counts in (manifest["counts"], held_out["counts"]):
        assert counts["records_read"] == counts["packed"] + counts["rejected"] + counts["dropped"]
    from sftpack import PackDataset

    assert len(PackDataset(validation)) == held_out["counts"]["rows"] > 0


def test_validation_split_is_seeded_and_the_same_for_any_thread_count(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    splits = {}
    for name, threads, seed in (("a", 1, 0), ("b", 2, 0), ("c", 2, 1)):
        out = tmp_path / name
        preprocess([data], DEMO, out, max_length=256, window=64, threads=threads, seed=seed, val_size=25)
        splits[name] = (shard_bytes(out), shard_bytes(out / "validation"), placed_documents(out / "validation"))
        assert len(placed_documents(out / "validation") | rejected_lines(out / "validation")) == 25
    assert splits["a"] == splits["b"]
    assert splits["a"][2] != splits["c"][2], "another seed holds out other records"


def test_interrupted_run_with_a_validation_split_resumes_to_identical_output(tmp_path: Path) -> None:
    data = dataset(tmp_path, 13_000)
    settings: dict[str, Any] = {"max_length": 256, "window": 50, "progress_interval_ms": 0, "val_size": 0.02}
    preprocess([data], DEMO, tmp_path / "whole", **settings)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        preprocess([data], DEMO, out, progress=interrupt_at_call(2), **settings)
    assert preprocess([data], DEMO, out, **settings)["status"] == "resumed"
    for part in (Path(), Path("validation")):
        assert shard_bytes(out / part) == shard_bytes(tmp_path / "whole" / part)
        assert (out / part / "rejects.jsonl").read_bytes() == (tmp_path / "whole" / part / "rejects.jsonl").read_bytes()


def test_validation_sizes_that_leave_nothing_to_train_are_refused(tmp_path: Path) -> None:
    data = dataset(tmp_path, 50)
    for size in (50, 1.5, -1, "half"):
        with pytest.raises(ConfigError, match="val"):
            preprocess([data], DEMO, tmp_path / "out", max_length=256, val_size=size)
    preprocess([data], DEMO, tmp_path / "out", max_length=256, val_size=5)
    preprocess([data], DEMO, tmp_path / "out", max_length=256, overwrite=True)
    assert not (tmp_path / "out" / "validation").exists(), "a re-run without a split removes the old one"


def test_a_share_that_holds_out_no_record_of_a_tiny_corpus_says_to_give_a_count(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "tiny.jsonl", [conversation(i) for i in range(3)])
    with pytest.raises(ConfigError, match=r"held out none of the 3 record\(s\)") as raised:
        preprocess([data], DEMO, tmp_path / "out", max_length=256, val_size=0.01)
    assert "val_size: 2" in str(raised.value)


def test_overlong_error_stops_the_run_naming_file_line_and_length(tmp_path: Path) -> None:
    data = dataset(tmp_path, 400)
    out = tmp_path / "out"
    with pytest.raises(InputError) as error:
        preprocess([data], DEMO, out, max_length=150, window=5, overlong="error")
    message = str(error.value)
    # line 16 (i = 15) is the first conversation over 150 tokens
    assert message.startswith(f"{data}:16: the conversation is too long (162 tokens > max_length 150)"), message
    assert not any(out.iterdir()), "nothing half-written: no shard, manifest, rejects or progress"
    cli = subprocess.run([sys.executable, "-m", "sftpack", "preprocess", str(data), "--tokenizer", str(DEMO),
                          "--out", str(out), "--max-length", "150", "--overlong", "error"],
                         capture_output=True, text=True)
    assert cli.returncode == 1 and cli.stderr.startswith(f"error: {data}:16:"), cli.stderr
    assert "hint: raise --max-length" in cli.stderr


@pytest.mark.parametrize("edit", ["bos_token", "legacy", "chat_template.jinja"])
def test_the_key_sees_every_tokenizer_file_that_can_change_ids(tmp_path: Path, edit: str) -> None:
    import shutil

    tokenizer = tmp_path / "tok"
    shutil.copytree(DEMO, tokenizer)
    data, out = dataset(tmp_path, 50), tmp_path / "out"
    first = preprocess([data], tokenizer, out, max_length=256)["manifest"]
    assert set(first["tokenizer"]["files"]) >= {"tokenizer.json", "tokenizer_config.json"}
    assert preprocess([data], tokenizer, out, max_length=256)["status"] == "up to date"
    config_path = tokenizer / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if edit == "chat_template.jinja":
        (tokenizer / edit).write_text(config["chat_template"].replace("<|im_start|>", "<|im_start|> "))
    else:
        config[edit] = "<|im_start|>" if edit == "bos_token" else True
        config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="other inputs or settings"):
        preprocess([data], tokenizer, out, max_length=256)
    second = preprocess([data], tokenizer, out, max_length=256, overwrite=True)["manifest"]
    assert second["key"] != first["key"] and second["engine_build"] == first["engine_build"]


def test_a_run_reads_its_input_once_and_records_what_it_read(tmp_path: Path) -> None:
    import hashlib
    import os

    data, out = dataset(tmp_path, 300), tmp_path / "out"
    result = preprocess([data], DEMO, out, max_length=256)
    assert result["timing"]["input_bytes_read"] == data.stat().st_size, "no separate hashing pass"
    recorded = result["manifest"]["inputs"][0]
    assert recorded["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest(), "hashed as it was read"
    assert recorded["bytes"] == data.stat().st_size and recorded["modified_ns"] == data.stat().st_mtime_ns
    again = preprocess([data], DEMO, out, max_length=256)
    assert again["status"] == "up to date" and again["timing"]["input_bytes_read"] == 0
    # A new time on the same bytes (a copy, a touch): checked once against the recorded hash
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    touched = preprocess([data], DEMO, out, max_length=256)
    assert touched["status"] == "up to date" and touched["timing"]["input_bytes_read"] == data.stat().st_size
    assert touched["manifest"]["inputs"][0]["modified_ns"] == data.stat().st_mtime_ns
    assert preprocess([data], DEMO, out, max_length=256)["timing"]["input_bytes_read"] == 0, "the new time is kept"
    data.write_text(data.read_text().replace("plus", "PLUS", 1))  # other bytes, same size
    with pytest.raises(ConfigError, match="other inputs or settings"):
        preprocess([data], DEMO, out, max_length=256)

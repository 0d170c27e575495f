"""Corpora where they live: s3:// objects (on a real S3-compatible server, moto's, started on
loopback) read as local files are — JSONL streamed, Parquet by ranged reads, prefixes listed like
directories — giving the same documents, with the objects named in every report."""

from __future__ import annotations

import gzip
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftpack import InputError, PackDataset, check
from sftpack.preprocess import preprocess

from .conftest import DEMO, data_path, document_tokens, read_jsonl

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """A bucket of this test's own, and the environment a user sets for an S3-compatible store."""
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = "sftpack-" + request.node.name.replace("_", "-")[:40].lower().strip("-")
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client


def put(s3: Any, key: str, data: bytes) -> str:
    s3.put_object(Bucket=s3.bucket, Key=key, Body=data)
    return f"s3://{s3.bucket}/{key}"


def parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    rows = [{"messages": [{"role": m["role"], "content": m["content"], "loss": m.get("loss")}
                          for m in r["messages"]]} for r in records]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=20, compression="snappy")
    return sink.getvalue()


def packed_locally(tmp_path: Path, tokenizer: Path) -> tuple[list[dict[str, Any]], bytes]:
    """The XTuner corpus's records, their JSON Lines bytes, packed from a local file into
    tmp_path/local."""
    records = read_jsonl(data_path("goldens", "xtuner", "input.jsonl"))
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    local = tmp_path / "all.jsonl"
    local.write_bytes(lines)
    preprocess([local], tokenizer, tmp_path / "local", max_length=4096)
    return records, lines


def test_jsonl_parquet_files_and_s3_objects_give_the_same_document_tokens(
        s3: Any, tmp_path: Path, tokenizer_dir: Any) -> None:
    tokenizer = tokenizer_dir("qwen3")
    records, lines = packed_locally(tmp_path, tokenizer)
    expected = document_tokens(tmp_path / "local")
    jsonl = put(s3, "chat/all.jsonl.gz", gzip.compress(lines))
    for i, part in enumerate((records[:70], records[70:140], records[140:])):
        put(s3, f"parquet/part-{i}.parquet", parquet_bytes(part))
    put(s3, "parquet/.hidden/x.parquet", parquet_bytes(records[:3]))
    put(s3, "parquet/_SUCCESS", b"")
    for name, inputs in (("jsonl", [jsonl]), ("prefix", [f"s3://{s3.bucket}/parquet/"]),
                         ("prefix without slash", [f"s3://{s3.bucket}/parquet"])):
        out = tmp_path / name.replace(" ", "-")
        result = preprocess(inputs, tokenizer, out, max_length=4096)
        assert document_tokens(out) == expected, name
        manifest = result["manifest"]
        assert [i["path"] for i in manifest["inputs"]] == (
            [jsonl] if name == "jsonl" else [f"s3://{s3.bucket}/parquet/part-{i}.parquet" for i in range(3)])
        assert all(i.get("etag") and "sha256" not in i for i in manifest["inputs"]), "keyed by ETag, not re-read"
        stored = sum(i["bytes"] for i in manifest["inputs"])
        if name == "jsonl":
            assert result["timing"]["input_bytes_read"] == stored, "an object is read once: one streamed GET"
        else:  # Parquet: the footer, then each row group once (one ranged GET each)
            assert 0.95 * stored <= result["timing"]["input_bytes_read"] <= 1.05 * stored
        assert preprocess(inputs, tokenizer, out, max_length=4096)["status"] == "up to date"


def test_parts_read_their_own_byte_ranges_of_an_object_and_merge_to_the_documents_of_one_run(
        s3: Any, tmp_path: Path, tokenizer_dir: Any) -> None:
    from sftpack.parts import merge_packs

    tokenizer = tokenizer_dir("qwen3")
    _, lines = packed_locally(tmp_path, tokenizer)
    url = put(s3, "chat/all.jsonl", lines)
    parts = [tmp_path / f"part-{i}" for i in range(3)]
    read = 0
    for index, part in enumerate(parts):
        result = preprocess([url], tokenizer, part, max_length=4096, num_shards=3, shard_index=index)
        assert result["manifest"]["counts"]["records_read"] > 0, "every part reads a range of the object"
        read += result["timing"]["input_bytes_read"]
    assert read <= 1.25 * len(lines), "ranged GETs: the parts read the object about once"
    merge_packs(parts, tmp_path / "merged")
    assert document_tokens(tmp_path / "merged") == document_tokens(tmp_path / "local")
    merged_lines = sorted(line for row in range(len(PackDataset(tmp_path / "merged")))
                          for _, line in PackDataset(tmp_path / "merged").sources(row))
    local_lines = sorted(line for row in range(len(PackDataset(tmp_path / "local")))
                         for _, line in PackDataset(tmp_path / "local").sources(row))
    assert merged_lines == local_lines, "every document keeps its line in the object"


def test_problems_in_objects_name_the_object_and_row(s3: Any) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    url = put(s3, "d.parquet", parquet_bytes([good, bad, good]))
    report = check([url], DEMO)
    assert (report["records"], report["encoded"]) == (3, 2)
    example = report["problems"]["unknown_role"]["examples"][0]
    assert (example["file"], example["line"]) == (url, 2)


def test_a_missing_object_or_bucket_is_a_clear_error(s3: Any) -> None:
    with pytest.raises(InputError, match="no object is named so") as error:
        check([f"s3://{s3.bucket}/nothing/here.jsonl"], DEMO)
    assert error.value.hint and "prefix" in error.value.hint
    with pytest.raises(InputError, match="s3://no-such-bucket-sftpack/x.jsonl") as missing:
        check(["s3://no-such-bucket-sftpack/x.jsonl"], DEMO)
    assert missing.value.hint and "AWS_ENDPOINT_URL" in missing.value.hint


def test_plain_http_is_only_for_this_machine(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="plain http is allowed only to this machine"):
        check(["http://example.com/data.jsonl"], DEMO)


def test_the_command_line_reads_a_bucket_prefix(s3: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    lines = (DEMO / "chat.jsonl").read_bytes()
    put(s3, "demo/chat.jsonl", lines)
    result = subprocess.run([sys.executable, "-m", "sftpack", "preprocess", f"s3://{s3.bucket}/demo/",
                             "--tokenizer", str(DEMO), "--out", str(tmp_path / "pack"), "--max-length", "256"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    counts = json.loads((tmp_path / "pack" / "manifest.json").read_text())["counts"]
    assert counts["records_read"] == 202 and counts["rejected"] == 2

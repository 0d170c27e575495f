"""`sftpack preprocess --engine ray` on a local Ray instance (one per test session, 2 CPUs): the
same documents, ids, masks, rejects (with their original file:line) and validation split as the
local engine; two Ray runs write identical bytes; a run stopped mid-way resumes from the parts it
finished. Skipped without Ray (pip install 'sftpack[ray]')."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpack.cli import main
from sftpack.preprocess import preprocess

from .conftest import DEMO
from .test_parts import documents
from .test_preprocess import dataset, rejected_lines, shard_bytes

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def on_ray(data: Path, out: Path, **options: Any) -> dict[str, Any]:
    return preprocess([data], DEMO, out, max_length=256, window=64, engine="ray", **options)


def test_ray_engine_packs_the_documents_rejects_and_split_of_the_local_engine(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    local = tmp_path / "local"
    preprocess([data], DEMO, local, max_length=256, window=64, val_size=0.05)
    result = on_ray(data, tmp_path / "ray", ray_actors=2, val_size=0.05)
    assert result["status"] == "done" and result["ray"]["actors"] == 2
    for split in ("", "validation"):
        assert documents(tmp_path / "ray" / split) == documents(local / split)
        assert rejected_lines(tmp_path / "ray" / split) == rejected_lines(local / split)
    rejects = [json.loads(line) for line in (tmp_path / "ray" / "rejects.jsonl").read_text().splitlines()]
    assert {(r["file"], r["line"]) for r in rejects} <= {(str(data), 11), (str(data), 21)}
    expected = json.loads((local / "manifest.json").read_text())["counts"]
    counts = result["manifest"]["counts"]
    assert counts["records_read"] == counts["packed"] + counts["rejected"] + counts["dropped"]
    for name in ("records_read", "packed", "rejected", "tokens", "trained_tokens"):
        assert counts[name] == expected[name], name


def test_two_ray_runs_write_identical_bytes_whatever_the_actor_count(tmp_path: Path) -> None:
    data = dataset(tmp_path, n=300)
    on_ray(data, tmp_path / "a", ray_actors=2, ray_parts=3)
    on_ray(data, tmp_path / "b", ray_actors=1, ray_parts=3)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert (tmp_path / "a" / "rejects.jsonl").read_bytes() == (tmp_path / "b" / "rejects.jsonl").read_bytes()
    assert on_ray(data, tmp_path / "a", ray_actors=2, ray_parts=3)["status"] == "up to date"


class Stop(Exception):
    pass


def test_a_ray_run_stopped_mid_way_resumes_from_its_finished_parts(tmp_path: Path) -> None:
    data = dataset(tmp_path, n=600)
    clean = tmp_path / "clean"
    on_ray(data, clean, ray_actors=2, ray_parts=4)

    def stop_after_first_part(progress: dict[str, Any]) -> None:
        if progress["parts_done"] >= 1:
            raise Stop

    out = tmp_path / "out"
    with pytest.raises(Stop):
        preprocess([data], DEMO, out, max_length=256, window=64, engine="ray", ray_actors=2, ray_parts=4,
                   progress=stop_after_first_part)
    assert not (out / "manifest.json").exists()
    result = on_ray(data, out, ray_actors=2, ray_parts=4)
    statuses = [part["status"] for part in result["ray"]["parts"]]
    assert "up to date" in statuses, statuses
    assert shard_bytes(out) == shard_bytes(clean)


def test_the_command_line_runs_on_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset(tmp_path, n=100)
    assert main(["preprocess", str(data), "--tokenizer", str(DEMO), "--out", str(tmp_path / "out"),
                 "--max-length", "256", "--engine", "ray", "--ray-actors", "2"]) == 0
    out = capsys.readouterr().out
    assert "on Ray: 2 parts by 2 actors" in out and "records read 100 = packed 98" in out

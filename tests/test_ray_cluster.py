"""`--engine ray` beyond one machine: a Ray cluster of two nodes, simulated on this one
(`ray.cluster_utils.Cluster`, each node its own raylet with one CPU), runs the parts on both
nodes and packs the documents of the local engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpack.preprocess import preprocess

from .conftest import DEMO
from .test_parts import documents
from .test_preprocess import dataset

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Any]:
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_parts_run_on_every_node_and_pack_the_local_engines_documents(two_nodes: Any, tmp_path: Path) -> None:
    data = dataset(tmp_path, n=400)
    preprocess([data], DEMO, tmp_path / "local", max_length=256, window=64, val_size=0.05)
    result = preprocess([data], DEMO, tmp_path / "ray", max_length=256, window=64, val_size=0.05, engine="ray",
                        ray_address=two_nodes.address, ray_actors=2, ray_parts=4)
    parts = result["ray"]["parts"]
    assert len(parts) == 4 and len({part["node_id"] for part in parts}) == 2, "both nodes prepared parts"
    assert all(part["input_bytes_read"] > 0 for part in parts), "each part says how much of the input it read"
    for split in ("", "validation"):
        assert documents(tmp_path / "ray" / split) == documents(tmp_path / "local" / split)

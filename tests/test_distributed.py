"""A real 2-process torchrun (gloo) run: every row exactly once per epoch across ranks, the same
number of steps on each, and the global trained-token count agreed by all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sftpack.preprocess import preprocess

from .conftest import DEMO, torchrun, write_lines

pytest.importorskip("torch")
pytest.importorskip("transformers")  # sftpack.train (process_groups) imports the trainer
pytest.importorskip("peft")

WORKER = """
import json, sys
import torch.distributed as dist
from sftpack import PackDataset, PackLoader
from sftpack.data import global_trained_tokens
from sftpack.train import process_groups

process_groups.start("gloo")
ds = PackDataset(sys.argv[1])
loader = PackLoader(ds, batch_size=2, drop_last=False, seed=5)
rows, steps, tokens = [], 0, 0
for batch in loader:
    steps += 1
    tokens += global_trained_tokens([batch])
rows = [int(i) for i in loader.sampler.indices()]
json.dump({"rows": rows, "steps": steps, "tokens": tokens}, open(f"{sys.argv[2]}/rank{dist.get_rank()}.json", "w"))
process_groups.end()
"""


def test_two_process_torchrun_covers_every_row(tmp_path: Path) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                      {"role": "assistant", "content": "a" * (i % 40 + 1)}]}) for i in range(300)]
    preprocess([write_lines(tmp_path / "d.jsonl", lines)], DEMO, tmp_path / "pack", max_length=128)
    (tmp_path / "worker.py").write_text(WORKER)
    subprocess.run([*torchrun(), str(tmp_path / "worker.py"), str(tmp_path / "pack"), str(tmp_path)], check=True,
                   timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    rows = json.loads((tmp_path / "pack" / "manifest.json").read_text())["counts"]["rows"]
    assert set(ranks[0]["rows"]) | set(ranks[1]["rows"]) == set(range(rows))
    assert ranks[0]["steps"] == ranks[1]["steps"]
    assert ranks[0]["tokens"] == ranks[1]["tokens"] > 0

"""Sequence parallelism (`distributed.sequence_parallel: N`) on the CPU over gloo: two
processes splitting each packed batch give the losses and gradients of one process (float32,
within 1e-5), equal to the unpacked per-document loss — documents stay apart wherever the cut
falls, key/value heads split too (GQA); training logs the same losses as one process; heads
that do not divide, and too few processes, are clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sftpack import ConfigError
from sftpack.preprocess import preprocess

from .conftest import DEMO, free_port, torchrun

torch = pytest.importorskip("torch")

WORKER = """
import json, sys, torch, torch.distributed as dist
from transformers import AutoModelForCausalLM
from sftpack import PackDataset
from sftpack.data import collate_padding_free
from sftpack.train import process_groups
from sftpack.train.attention import transformers_name
from sftpack.train.loss import TokenLoss
from sftpack.train.sequence_parallel import SequenceParallel, activate

process_groups.start("gloo")
pack, model_dir, rows, chunk, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
data = PackDataset(pack)
batch = collate_padding_free([data[int(i)] for i in rows.split(",")], "pt")
parallel = SequenceParallel(2, dist.get_rank(), 2)
activate(parallel)
model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=transformers_name("ulysses"),
                                             dtype=torch.float32)
parallel.check_model(model.config)
loss = TokenLoss(model, chunk_tokens=chunk)(**parallel.shard(batch))
loss.backward()
total = loss.detach().clone()
dist.all_reduce(total)
grads = {name: p.grad.clone() for name, p in model.named_parameters()}
for grad in grads.values():
    dist.all_reduce(grad)
rank = dist.get_rank()
if rank == 0:
    torch.save({"loss": total, "grads": grads}, out)
activate(None)
del parallel, loss  # the group, and the graph whose all-to-all kept it
process_groups.end()
json.dump(process_groups.gloo_threads(), open(f"{out}.rank{rank}.threads", "w"))
"""


def tiny_model(target: Path, tokenizer: Path) -> Path:
    """A random-init Llama with 4 query and 2 key/value heads (GQA), the demo tokenizer's vocabulary."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    vocab = len(json.loads((tokenizer / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(target))
    return target


def unpacked_reference(pack: Path, model_dir: Path, rows: list[int]) -> tuple[Any, dict[str, Any]]:
    """The summed token loss of each document of the rows run on its own, and its gradients."""
    from transformers import AutoModelForCausalLM

    from sftpack import PackDataset
    from sftpack.data import sum_token_loss

    data = PackDataset(pack)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="sdpa", dtype=torch.float32)
    total = torch.zeros((), dtype=torch.float32)
    for row in rows:
        item = data[row]
        cu = item["cu_seqlens"]
        for a, b in zip(cu[:-1], cu[1:], strict=True):
            ids = torch.as_tensor(item["input_ids"][a:b], dtype=torch.int64)[None, :]
            labels = torch.as_tensor(item["labels"][a:b], dtype=torch.int64)[None, :]
            total = total + sum_token_loss(model(input_ids=ids).logits, labels)
    total.backward()
    return total.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sp")
    preprocess([DEMO / "chat.jsonl"], DEMO, root / "pack", max_length=256)
    return root / "pack", tiny_model(root / "model", DEMO)


@pytest.mark.parametrize("chunk", [0, 16], ids=["full-logits", "chunked-loss"])
def test_two_ranks_give_the_losses_and_gradients_of_unpacked_documents(
        chunk: int, packed: tuple[Path, Path], tmp_path: Path) -> None:
    from sftpack import PackDataset

    pack, model_dir = packed
    data = PackDataset(pack)
    rows = [0, 1]
    while sum(len(data[r]["input_ids"]) for r in rows) % 2 == 0:  # an odd count: the last rank gets padding
        rows.append(len(rows))
    (tmp_path / "worker.py").write_text(WORKER)
    subprocess.run([*torchrun(), str(tmp_path / "worker.py"), str(pack), str(model_dir),
                    ",".join(map(str, rows)), str(chunk), str(tmp_path / "sp.pt")], check=True, timeout=600)
    for rank in range(2):
        assert json.loads((tmp_path / f"sp.pt.rank{rank}.threads").read_text()) == [], "gloo threads outlive the run"
    parallel = torch.load(tmp_path / "sp.pt")
    loss, grads = unpacked_reference(pack, model_dir, rows)
    assert abs(float(parallel["loss"]) - float(loss)) <= 1e-5 * abs(float(loss))
    for name, grad in grads.items():
        difference = (parallel["grads"][name] - grad).norm()
        assert difference <= 1e-5 * max(grad.norm(), 1e-6), name


def test_heads_that_do_not_divide_are_named() -> None:
    from sftpack.train.sequence_parallel import check_heads

    check_heads(SimpleNamespace(num_attention_heads=8, num_key_value_heads=2), 2)
    with pytest.raises(ConfigError, match="does not divide the model's 2 key/value heads"):
        check_heads(SimpleNamespace(num_attention_heads=8, num_key_value_heads=2), 4)
    with pytest.raises(ConfigError, match="does not divide the model's 6 attention heads"):
        check_heads(SimpleNamespace(num_attention_heads=6, num_key_value_heads=None), 4)


def losses(metrics: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def quickstart_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart's model, pack and recipe, for a few logged steps."""
    import yaml

    from sftpack.quickstart import make_base_model, recipe, write_data

    root = tmp_path_factory.mktemp("sp-train")
    write_data(root / "chat.jsonl")
    make_base_model(root / "model")
    preprocess([root / "chat.jsonl"], root / "model", root / "pack", max_length=512)
    settings = recipe(steps=6)
    settings["model"]["path"] = str(root / "model")
    settings["data"]["pack"] = str(root / "pack")
    settings["output"].update(log_every=1, eval_every=0)
    (root / "recipe.yaml").write_text(yaml.safe_dump(settings))
    return root / "recipe.yaml"


def train_losses(recipe: Path, out: Path, processes: int, *overrides: str) -> list[float]:
    env = {**os.environ, "NPROC_PER_NODE": str(processes), "PORT": free_port()}
    done = subprocess.run([sys.executable, "-m", "sftpack", "train", str(recipe), f"output.dir={out}", *overrides],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return losses(out / "metrics.jsonl")


@pytest.mark.parametrize(("method", "processes", "data_parallel"), [
    ("full", 2, 1), ("lora", 2, 1), ("qlora", 2, 1), ("full", 4, 2)],
    ids=["full", "lora", "qlora", "beside-data-parallel"])
def test_training_with_sequence_parallel_ranks_logs_the_losses_without_them(
        method: str, processes: int, data_parallel: int, quickstart_recipe: Path, tmp_path: Path) -> None:
    """2 ranks of one group against one process; 2 groups of 2 against 2 data-parallel processes."""
    options = [f"method.name={method}"]
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
        options.append("method.compute_dtype=float32")  # 4-bit matmuls exact at any number of rows
    plain = train_losses(quickstart_recipe, tmp_path / "plain", data_parallel, *options)
    parallel = train_losses(quickstart_recipe, tmp_path / "sp", processes, *options,
                            "distributed.sequence_parallel=2")
    assert len(parallel) == len(plain) == 6
    for one, split in zip(plain, parallel, strict=True):
        assert abs(one - split) <= 1e-4 * max(abs(one), 1e-3), (plain, parallel)


TRAIN_WORKER = """
import json, os, sys
from sftpack.train import train
from sftpack.train.process_groups import gloo_threads

recipe, out = sys.argv[1], sys.argv[2]
train(recipe, [f"output.dir={out}", "distributed.sequence_parallel=2"])
json.dump(gloo_threads(), open(f"{out}/rank{os.environ['RANK']}.json", "w"))
"""


def test_a_finished_run_leaves_no_gloo_thread_for_the_interpreter_shutdown(
        quickstart_recipe: Path, tmp_path: Path) -> None:
    """A gloo thread still running when Python shuts down can abort a finished run (SIGABRT); each
    rank's groups, DistributedDataParallel's and the sequence-parallel one, end with train()."""
    (tmp_path / "worker.py").write_text(TRAIN_WORKER)
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    subprocess.run([*torchrun(), str(tmp_path / "worker.py"), str(quickstart_recipe), str(tmp_path / "out")],
                   check=True, timeout=600, env=env)
    for rank in range(2):
        assert json.loads((tmp_path / "out" / f"rank{rank}.json").read_text()) == [], rank


def test_sequence_parallel_needs_as_many_processes(tmp_path: Path) -> None:
    from sftpack.train.config import TrainConfig
    from sftpack.train.recipe import SFTRecipe

    config = TrainConfig()
    config.distributed.sequence_parallel = 2
    with pytest.raises(ConfigError, match="needs 2 or more processes"):
        SFTRecipe(config).setup()

"""The GPU benches work before a GPU session spends time on them: on the CPU, at `--scale tiny`,
bench_train_gpu.py prepares its pack, trains each configuration (QLoRA too: bitsandbytes' 4-bit
layers run on the CPU) and its transformers-Trainer baseline and writes the results file issue 23
specifies (its baseline sees exactly our tokens); bench_long_context.py doubles the row length
while a row trains and records each attempt."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sftpack import PackDataset  # noqa: E402
from sftpack.data import collate_padding_free  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench_train_gpu.py"
LONG = BENCH.with_name("bench_long_context.py")
RUN_FIELDS = {"name", "method", "model", "seq_len", "attention", "kernels", "deepspeed", "tokens_per_s", "mfu",
              "peak_mem_gb", "baseline"}


def bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_train_gpu", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench-gpu") / "work"
    subprocess.run([sys.executable, str(BENCH), "prepare", "--out", str(folder), "--size-mb", "0.2",
                    "--max-length", "512"], check=True, capture_output=True, text=True)
    return folder


def test_the_bench_writes_every_run_beside_its_baseline(work: Path, tmp_path: Path) -> None:
    for needed in ("bitsandbytes", "deepspeed"):  # the qlora-8b and zero3-2b runs
        pytest.importorskip(needed)
    results = tmp_path / "train_gpu.json"
    env = {**os.environ, "SFTPACK_BENCH_MODELS": str(tmp_path / "models"), "SFTPACK_BENCH_RUNS": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, str(BENCH), "run", "--work", str(work), "--scale", "tiny",
                           "--runs", "full-4b,lora-8b,qlora-8b,zero3-2b", "--steps", "3", "--warmup", "1",
                           "--json", str(results)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(results.read_text())
    assert result["device"] == "cpu" and result["torch"] == torch.__version__
    assert len(result["commit"].removesuffix("-dirty")) == 40
    assert [r["name"] for r in result["runs"]] == ["full-4b", "lora-8b", "qlora-8b", "zero3-2b"]
    # ZeRO-3 on both sides: ours through sftpack's backend, the Trainer's through its integration
    for run, method, zero in zip(result["runs"], ["full", "lora", "qlora", "full"], [None, None, None, "zero3"],
                                 strict=True):
        assert RUN_FIELDS <= set(run)
        assert run["method"] == method and run["seq_len"] == 512 and run["deepspeed"] == zero
        assert run["completed"] and run["steps"] == 3
        assert run["tokens_per_s"] > 0 and run["baseline"]["tokens_per_s"] > 0
        assert run["baseline"]["attention"] == "sdpa"  # no flash-attn on the CPU
        assert "error" not in run and "error" not in run["baseline"]
        # one row a micro-step, two accumulated (8,192 tokens an optimizer step at full scale)
        assert (run["rows_per_micro_step"], run["grad_accum"]) == (1, 2)
        assert run["gradient_checkpointing"] == (zero is not None)
    assert "target lora-8b tokens/s / baseline" in done.stdout


def test_the_baseline_flattens_the_same_tokens_our_collator_packs(work: Path) -> None:
    """DataCollatorWithFlattening over a row's documents gives the row's ids and positions, and
    our labels except each document's first token, which neither side trains."""
    from transformers import DataCollatorWithFlattening

    bench = bench_module()
    rows = bench.pack_documents(work / "pack", 6)
    dataset = PackDataset(work / "pack")
    flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    for index, documents in enumerate(rows):
        ours = {k: np.asarray(v) for k, v in collate_padding_free([dataset[index]], "np").items()}
        theirs = flatten(documents, return_tensors="np")
        assert np.array_equal(theirs["input_ids"][0], ours["input_ids"][0])
        assert np.array_equal(theirs["position_ids"][0], ours["position_ids"][0])
        starts = dataset[index]["cu_seqlens"][:-1]
        expected = ours["labels"][0].copy()
        expected[starts] = -100
        assert np.array_equal(theirs["labels"][0], expected)
        assert np.all(ours["labels"][0][starts] == -100)  # a document's first token is never a target


def test_the_long_context_bench_records_each_length_it_trained(work: Path, tmp_path: Path) -> None:
    results = tmp_path / "long_context.json"
    env = {**os.environ, "SFTPACK_BENCH_MODELS": str(tmp_path / "models"), "SFTPACK_BENCH_RUNS": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, str(LONG), "--work", str(work), "--scale", "tiny", "--start", "256",
                           "--stop", "512", "--json", str(results)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(results.read_text())
    assert result["model"] == "qwen3-4b-tiny" and result["method"] == "full"
    assert [r["gradient_checkpointing"] for r in result["runs"]] == [False, True]
    for run in result["runs"]:
        assert [a["length"] for a in run["attempts"]] == [256, 512]
        assert all(a["ok"] and a["tokens_per_s"] > 0 for a in run["attempts"]), run
        assert run["longest"] == 512
    assert "longest row 512 tokens (the --stop cap)" in done.stdout
    rows = PackDataset(work / "long" / "pack-512").lengths()
    assert rows[0] == 512 and len(rows) == 2  # the full-length row and the document's rest


def test_runs_split_over_several_commands_end_in_one_results_file(tmp_path: Path) -> None:
    bench = bench_module()
    here = {"device": "NVIDIA H100 80GB HBM3", "commit": "a" * 40, "torch": "2.11.0+cu130"}
    path = tmp_path / "train_gpu.json"
    path.write_text(json.dumps({**here, "runs": [{"name": "full-4b"}, {"name": "lora-8b"}]}))
    kept = bench.previous_results(path, here, ["lora-8b", "qlora-8b"])
    assert kept == {**here, "runs": [{"name": "full-4b"}]}  # lora-8b runs again
    assert bench.previous_results(path, {**here, "commit": "b" * 40}, ["qlora-8b"])["runs"] == []


def test_the_gpu_script_refuses_before_it_spends_device_time(tmp_path: Path) -> None:
    """On a GPU machine a mistake costs minutes of a short loan: a wrong part or a missing .gpu/
    (the prepared pack) stops the script before it installs or imports anything."""
    script = tmp_path / "scripts" / "gpu_checks.sh"
    script.parent.mkdir()
    script.write_text((Path(__file__).resolve().parent.parent / "scripts" / "gpu_checks.sh").read_text())
    wrong = subprocess.run(["bash", str(script), "benchmark"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "usage: scripts/gpu_checks.sh all|tests|bench|long" in wrong.stderr
    for part in ("all", "bench", "long"):
        unprepared = subprocess.run(["bash", str(script), part], capture_output=True, text=True)
        assert unprepared.returncode == 2, part
        assert "run 'python3 benches/bench_train_gpu.py prepare'" in unprepared.stderr
        assert unprepared.stdout == ""  # nothing installed, nothing imported


def test_a_failed_run_is_reported_and_the_next_one_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    """An out-of-memory run on the GPU is a result (its error, no figures), not the end of the
    benchmark: its targets read as not met and the table names what failed."""
    bench = bench_module()

    def out_of_memory() -> dict[str, Any]:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    failed = bench.guarded(out_of_memory)
    assert failed == {"error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert bench.guarded(lambda: {"tokens_per_s": 10.0}) == {"tokens_per_s": 10.0}
    run = {"name": "full-4b", "attention": "varlen", "kernels": "liger", "tokens_per_s": None, "mfu": None,
           "peak_mem_gb": None, "steps": 0, "completed": False, **failed,
           "baseline": {"tokens_per_s": 9000.0, "peak_mem_gb": 60.0}}
    lora = {**run, "name": "lora-8b", "tokens_per_s": 12000.0, "mfu": 0.41, "peak_mem_gb": 50.0, "steps": 20}
    del lora["error"]
    assert bench.targets([run, lora]) == [("full-4b MFU", None, ">= 0.40", False),
                                          ("lora-8b tokens/s / baseline", 12000.0 / 9000.0, ">= 1.3", True)]
    bench.report({"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "commit": "a" * 40, "runs": [run, lora]})
    printed = capsys.readouterr().out
    assert "full-4b sftpack failed: OutOfMemoryError" in printed
    assert "target full-4b MFU: - (target >= 0.40) NOT met" in printed
    assert "target lora-8b tokens/s / baseline: 1.33 (target >= 1.3) met" in printed


def test_the_baseline_trains_with_our_attention_kernel() -> None:
    """What the bench compares is the rest of the training step: the baseline gets the kernel that
    `attention: auto` picked for us (PyTorch's varlen one through the name sftpack registers in
    transformers, fed by the flattening collator's cu_seq_lens), SDPA only where ours is SDPA."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from sftpack.train.attention import varlen_attention_forward

    bench = bench_module()
    assert bench.baseline_attention("varlen") == "sftpack_varlen"
    assert ALL_ATTENTION_FUNCTIONS["sftpack_varlen"] is varlen_attention_forward
    assert bench.baseline_attention("flash_attention_2") == "flash_attention_2"
    assert bench.baseline_attention("flash_attention_4") == "flash_attention_4"
    assert bench.baseline_attention("sdpa") == "sdpa"

"""GPU-only checks (skipped without CUDA): every varlen kernel computes per-document attention on
packed rows, and QLoRA trains. CI has no GPU; these run wherever one is at hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from sftpack import PackDataset  # noqa: E402
from sftpack.data import collate_padding_free, sum_token_loss  # noqa: E402
from sftpack.train import load_config, train  # noqa: E402
from sftpack.train.attention import flash_attn_available, torch_varlen_available, transformers_name  # noqa: E402


@pytest.fixture
def setup(tiny_setup: dict[str, Path]) -> dict[str, Path]:
    return tiny_setup


def loss_and_grads(model: Any, batch: dict[str, Any]) -> tuple[float, list[Any]]:
    model.zero_grad()
    inputs = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items() if k != "labels"}
    loss = sum_token_loss(model(**inputs).logits, batch["labels"].cuda())
    loss.backward()
    return float(loss), [p.grad.float().clone() for p in model.parameters()]


KERNELS = [pytest.param("varlen", marks=pytest.mark.skipif(not torch_varlen_available(), reason="torch < 2.10")),
           pytest.param("flash_attention_2", marks=pytest.mark.skipif(not flash_attn_available(),
                                                                      reason="no flash-attn")),
           "flex_attention"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_varlen_kernels_match_per_document_attention(setup: dict[str, Path], kernel: str) -> None:
    from transformers import AutoModelForCausalLM

    row = next(r for r in (PackDataset(setup["pack"])[i] for i in range(8)) if len(r["cu_seqlens"]) > 3)
    packed_model = AutoModelForCausalLM.from_pretrained(str(setup["base"]), dtype=torch.bfloat16,
                                                        attn_implementation=transformers_name(kernel)).cuda()
    packed, packed_grads = loss_and_grads(packed_model, collate_padding_free([row], "pt"))

    reference = AutoModelForCausalLM.from_pretrained(str(setup["base"]), dtype=torch.bfloat16,
                                                     attn_implementation="sdpa").cuda()
    reference.zero_grad()
    unpacked = torch.zeros((), device="cuda")
    cu = row["cu_seqlens"]
    for start, end in zip(cu[:-1], cu[1:], strict=True):
        ids = torch.from_numpy(row["input_ids"][start:end].astype("int64"))[None].cuda()
        labels = torch.from_numpy(row["labels"][start:end])[None].cuda()
        unpacked = unpacked + sum_token_loss(reference(input_ids=ids).logits, labels)
    unpacked.backward()
    assert abs(packed - float(unpacked)) < 5e-3 * abs(float(unpacked))
    for p, g in zip(reference.parameters(), packed_grads, strict=True):
        assert (p.grad.float() - g).norm() <= 3e-2 * max(float(g.norm()), 1e-6)


def test_qlora_trains(setup: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    raw = {"model": {"path": str(setup["base"]), "dtype": "bfloat16"},
           "method": {"name": "qlora", "lora_r": 16, "lora_alpha": 32},
           "data": {"pack": str(setup["pack"]), "batch_size": 4},
           "optim": {"lr": 1e-2, "max_steps": 30, "scheduler": "constant"},
           "output": {"dir": str(tmp_path)}}
    model_dir = train(load_config(raw=raw))
    curve = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(curve[-3:]) < 0.95 * sum(curve[:3]), curve  # the bar test_train.py sets for LoRA
    assert (model_dir / "adapter_config.json").is_file()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < record["mfu"] < 1 and record["max_memory_gb"] > 0

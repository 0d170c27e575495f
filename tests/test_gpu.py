"""GPU-only checks (skipped without CUDA): every varlen kernel computes per-document attention on
packed rows, QLoRA trains, its 4-bit base is the one sftpack rounds on the CPU, ZeRO-2/3 train like
plain torch on one GPU, Liger's kernels give the unfused loss. CI has no GPU; scripts/gpu_checks.sh
runs these wherever one is at hand."""

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
from sftpack.train.attention import (  # noqa: E402
    flash_attn4_available,
    flash_attn_available,
    torch_varlen_available,
    transformers_name,
)

from .conftest import read_metrics, train_copied_recipe  # noqa: E402


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
           pytest.param("flash_attention_4", marks=pytest.mark.skipif(not flash_attn4_available(),
                                                                      reason="no flash-attn-4 on a Hopper+ GPU")),
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


def four_bit_differences(weight: Any, bnb: Any, device: str = "cuda") -> dict[str, float]:
    """How bitsandbytes' kernel on ``device`` and sftpack's CPU rounding (train/quantize.py) differ
    on one weight: end to end, and in the scales' rounding alone, given the device's own input."""
    from sftpack.train.quantize import scales_rounded_as_on_cuda

    settings = {"blocksize": 64, "compress_statistics": True, "quant_type": "nf4"}
    gpu_codes, gpu = bnb.functional.quantize_4bit(weight.to(device), **settings)
    with scales_rounded_as_on_cuda():
        cpu_codes, cpu = bnb.functional.quantize_4bit(weight, **settings)
        # what the device rounded to 8 bits: each block's maximum (exact anywhere) less its mean
        flat = weight.float().reshape(-1)
        blocks = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 64)).view(-1, 64)
        deviations = blocks.abs().amax(1) - gpu.offset.float().cpu()
        cpu_scales, _ = bnb.functional.quantize_blockwise(deviations, blocksize=256)
    gpu_scales, _ = bnb.functional.quantize_blockwise(deviations.to(device), blocksize=256)
    gpu_weight = bnb.functional.dequantize_4bit(gpu_codes, gpu).float().cpu()
    cpu_weight = bnb.functional.dequantize_4bit(cpu_codes, cpu).float()
    return {"codes": int((gpu_codes.cpu() != cpu_codes).sum()), "scales": int((gpu.absmax.cpu() != cpu.absmax).sum()),
            "of_scales": cpu.absmax.numel(), "search": int((gpu_scales.cpu() != cpu_scales).sum()),
            "offset": abs(float(gpu.offset) - float(cpu.offset)),
            "weights": float(((gpu_weight - cpu_weight).abs() / cpu_weight.abs().clamp(min=1e-12)).max())}


def test_a_4_bit_base_is_rounded_on_the_cpu_as_on_the_gpu(setup: dict[str, Path]) -> None:
    """For Llama-8B-sized projections in bfloat16 and the tiny base's layers: NF4 codes equal bit
    for bit; the double-quantized scales too, given the same input (the CUDA kernel's search). End
    to end the input is each block's maximum less the maxima's mean, and a GPU's float32 mean may
    round one step apart from the CPU's: then the few scales on a code boundary (measured on the
    CPU: 105 of 262,144 for a one-step offset) take the next code; else all equal."""
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    weights = {str(shape): (torch.randn(shape) * 0.02).to(torch.bfloat16) for shape in [(4096, 4096), (14336, 4096)]}
    base = AutoModelForCausalLM.from_pretrained(str(setup["base"]), dtype=torch.bfloat16)
    weights |= {name: p.detach() for name, p in base.named_parameters() if name.endswith("proj.weight")}
    differences = {name: four_bit_differences(weight, bnb) for name, weight in weights.items()}
    print(json.dumps(differences))
    for d in differences.values():
        assert d["codes"] == 0 and d["search"] == 0
        if d["offset"] == 0:
            assert d["scales"] == 0 and d["weights"] <= 1e-5
        else:
            assert d["scales"] <= 2e-3 * d["of_scales"]


def test_a_copied_shipped_recipe_samples_and_evaluates_under_varlen(tiny_eval_setup: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    """Every shipped recipe says `attention: auto`, which picks PyTorch's varlen kernel on a GPU
    without flash-attn; samples (which generate, and varlen cannot) and evaluations run in it."""
    from sftpack.train.attention import choose_attention

    if choose_attention("auto") != "varlen":
        pytest.skip("attention: auto does not resolve to varlen here (flash-attn installed, or torch < 2.10)")
    result, run = train_copied_recipe("qwen3_8b_lora", tiny_eval_setup, tmp_path, "optim.max_steps=6",
                                      "optim.grad_accum=2", "output.sample_every=2", "output.eval_every=2")
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [2, 4, 6]
    assert [r["step"] for r in read_metrics(run)[1]] == [2, 4, 6]
    assert (run / "model" / "adapter_config.json").is_file()


@pytest.mark.skipif(not __import__("sftpack.train.kernels", fromlist=["x"]).liger_available(),
                    reason="no liger-kernel (pip install 'sftpack[kernels]')")
def test_liger_kernels_give_the_unfused_loss_and_gradients(setup: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    from sftpack.train.kernels import apply_kernels
    from sftpack.train.loss import TokenLoss

    data = PackDataset(setup["pack"])
    batch = collate_padding_free([data[i] for i in range(min(4, len(data)))], "pt")
    inputs = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items()}
    results = []
    for kernels in ("none", "liger"):
        model = AutoModelForCausalLM.from_pretrained(str(setup["base"]), dtype=torch.float32,
                                                     attn_implementation=transformers_name("varlen")
                                                     if torch_varlen_available() else "sdpa").cuda()
        apply_kernels(model, kernels)
        loss = TokenLoss(model, kernels=kernels)(**inputs)
        loss.backward()
        results.append((float(loss), [p.grad.float().clone() for p in model.parameters()]))
    (plain, plain_grads), (fused, fused_grads) = results
    assert abs(plain - fused) <= 1e-4 * abs(plain)
    for a, b in zip(plain_grads, fused_grads, strict=True):
        assert (a - b).norm() <= 1e-3 * max(float(a.norm()), 1e-6)


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_zero_trains_like_plain_torch_on_one_gpu(setup: dict[str, Path], tmp_path: Path, zero: str,
                                                 method: str) -> None:
    """The CPU suite proves this under gloo; here DeepSpeed's CUDA path (NCCL, torch's fused AdamW
    inside it, the varlen kernel that `attention: auto` picks) must give plain torch's losses too."""
    pytest.importorskip("deepspeed")

    def run(name: str, deepspeed: str | None) -> list[float]:
        raw: dict[str, Any] = {"model": {"path": str(setup["base"]), "dtype": "float32", "attention": "auto"},
                               "method": {"name": method},
                               "data": {"pack": str(setup["pack"]), "batch_size": 2},
                               "optim": {"lr": 3e-3, "max_steps": 6, "scheduler": "constant", "grad_accum": 2},
                               "output": {"dir": str(tmp_path / name), "report_to": []},
                               "distributed": {"deepspeed": deepspeed}}
        train(load_config(raw=raw))
        return [r["loss"] for r in read_metrics(tmp_path / name)[0]]

    plain, zeroed = run("plain", None), run(zero, zero)
    assert len(zeroed) == 6
    assert zeroed == pytest.approx(plain, rel=2e-3)

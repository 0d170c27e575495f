"""QLoRA on the CPU (bitsandbytes >= 0.46.1 runs its 4-bit layers there as on CUDA): the base
stays 4-bit and frozen while the adapters learn, packed loss equals unpacked, resume reproduces
the uninterrupted run, ZeRO-2 trains like plain torch, a merged adapter computes what training
evaluated, chat loads the base in 4 bits as training did, and the 4-bit base is rounded on the CPU
as bitsandbytes' CUDA kernel rounds it (tests/test_gpu.py compares the two on a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")

from sftpack import PackDataset  # noqa: E402
from sftpack.lifecycle import ChatSession, qlora_base  # noqa: E402
from sftpack.record import TrainingRecord  # noqa: E402
from sftpack.train import load_config, train  # noqa: E402
from sftpack.train.quantize import kernel_search, scales_rounded_as_on_cuda  # noqa: E402
from sftpack.train.recipe import SFTRecipe  # noqa: E402

from .conftest import per_document_eval_loss  # noqa: E402

# float32 compute makes the 4-bit layers' matmuls exact enough to state equalities at 1e-5;
# the training test keeps the recipes' bfloat16 compute.
EXACT = {"compute_dtype": "float32"}


def recipe(setup: dict[str, Path], out: Path, **sections: dict[str, Any]) -> Any:
    raw: dict[str, Any] = {"model": {"path": str(setup["base"]), "attention": "sdpa"},
                           "method": {"name": "qlora", "lora_r": 16, "lora_alpha": 32},
                           "data": {"pack": str(setup["pack"]), "batch_size": 4},
                           "optim": {"lr": 1e-2, "max_steps": 6, "scheduler": "constant"},
                           "output": {"dir": str(out), "report_to": []}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return load_config(raw=raw)


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def trained_model(base: Path, adapter: Path) -> Any:
    """The model training had: the base rounded to 4 bits as the adapter's recipe did, with the adapter."""
    from peft import PeftModel

    record = TrainingRecord.read(adapter)
    assert record is not None
    return PeftModel.from_pretrained(qlora_base(base, record, "cpu", False), str(adapter))


def logits(model: Any, ids: Any) -> Any:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def adapter(tiny_setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A QLoRA adapter trained far enough from zero that where it is folded shows."""
    out = tmp_path_factory.mktemp("qlora-adapter")
    return train(recipe(tiny_setup, out, method=EXACT, optim={"lr": 3e-2, "max_steps": 8}))


def test_qlora_trains_adapters_over_a_frozen_4_bit_base(tiny_setup: dict[str, Path], tmp_path: Path) -> None:
    run = SFTRecipe(recipe(tiny_setup, tmp_path / "setup"))
    run.setup()
    four_bit = [m for m in run.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and not any(m.weight.requires_grad for m in four_bit)
    trainable = [name for name, p in run.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    run.cleanup()

    model_dir = train(recipe(tiny_setup, tmp_path / "run", optim={"max_steps": 30}))
    curve = losses(tmp_path / "run")
    assert sum(curve[-3:]) < 0.95 * sum(curve[:3]), curve  # the bar test_train.py sets for LoRA
    assert (model_dir / "adapter_config.json").is_file()
    record = TrainingRecord.read(model_dir)
    assert record is not None and record.method == "qlora"


def test_packed_eval_loss_equals_the_per_document_loss_under_qlora(tiny_eval_setup: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    run = SFTRecipe(recipe(tiny_eval_setup, tmp_path, method=EXACT, data={"batch_size": 3}))
    run.setup()
    assert run.evaluator is not None
    run.model.eval()
    result = run.evaluator.run(run._forward_sum_loss)
    reference, tokens = per_document_eval_loss(run.model, tiny_eval_setup["validation"])
    run.cleanup()
    assert result.tokens == tokens == PackDataset(tiny_eval_setup["validation"]).manifest["counts"]["trained_tokens"]
    assert abs(result.loss - reference) < 1e-5 * reference


def test_resume_reproduces_the_uninterrupted_qlora_run(tiny_setup: dict[str, Path], tmp_path: Path) -> None:
    train(recipe(tiny_setup, tmp_path / "whole"))
    split = {"save_every": 3, "dir": str(tmp_path / "split")}
    train(recipe(tiny_setup, tmp_path / "split", optim={"max_steps": 3}, output=split))
    train(recipe(tiny_setup, tmp_path / "split", output=split))
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)


def test_zero2_trains_qlora_like_plain_torch(tiny_setup: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    train(recipe(tiny_setup, tmp_path / "plain", method=EXACT, optim={"max_steps": 4}))
    train(recipe(tiny_setup, tmp_path / "zero2", method=EXACT, optim={"max_steps": 4},
                 distributed={"deepspeed": "zero2"}))
    assert losses(tmp_path / "zero2") == pytest.approx(losses(tmp_path / "plain"), rel=1e-4)


def test_a_merged_qlora_adapter_computes_what_training_evaluated(tiny_setup: dict[str, Path], adapter: Path,
                                                                 tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def merged(*flags: str) -> Any:
        out = tmp_path / ("merged" + "".join(flags))
        result = subprocess.run([sys.executable, "-m", "sftpack", "merge", str(tiny_setup["base"]), str(adapter),
                                 str(out), *flags], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert "quantization_config" not in json.loads((out / "config.json").read_text())
        return AutoModelForCausalLM.from_pretrained(str(out))

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 31]])
    trained = logits(trained_model(tiny_setup["base"], adapter), ids)
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_setup["base"])), str(adapter))

    as_trained, onto_original = merged(), merged("--original-base")
    assert as_trained.dtype == torch.float32  # the base's own dtype
    assert torch.allclose(logits(as_trained, ids), trained, atol=1e-4)
    assert torch.allclose(logits(onto_original, ids), logits(original, ids), atol=1e-5)
    # what the default changes: folded into the original weights, the model is not the one trained
    assert (logits(onto_original, ids) - trained).abs().max() > 10 * (logits(as_trained, ids) - trained).abs().max()


def test_chat_with_a_qlora_adapter_loads_the_base_in_4_bits_as_training_did(tiny_setup: dict[str, Path],
                                                                            adapter: Path) -> None:
    session = ChatSession(tiny_setup["base"], adapter)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in session.model.modules())
    reference = trained_model(tiny_setup["base"], adapter)
    ids = torch.tensor([session.prompt_ids("Name a red cat.")])
    assert torch.equal(logits(session.model, ids), logits(reference, ids))
    assert isinstance(session.reply("Name a red cat.", max_new_tokens=4), str)


def test_a_qlora_sample_is_what_chat_says_with_the_saved_adapter(tiny_setup: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """Training samples from its 4-bit model, and chat with the saved adapter says the same (the
    chat test above shows its logits are the training model's; a tiny model's greedy words
    would not tell the two bases apart)."""
    prompt = "Name a red cat."
    adapter = train(recipe(tiny_setup, tmp_path, optim={"lr": 3e-2, "max_steps": 8},
                           output={"sample_every": 8, "sample_prompts": [prompt], "sample_max_new_tokens": 12}))
    taken = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in taken] == [8] and taken[0]["reply"].strip()
    assert ChatSession(tiny_setup["base"], adapter).reply(prompt, 12) == taken[0]["reply"]


def test_a_missing_or_too_old_bitsandbytes_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from sftpack import ConfigError
    from sftpack.train.model import quantization_config

    monkeypatch.setattr(bnb, "__version__", "0.45.5")  # no 4-bit layers on the CPU yet
    with pytest.raises(ConfigError, match=r"bitsandbytes >= 0\.46\.1, this is 0\.45\.5\nhint: pip install -U"):
        quantization_config("nf4", True, "bfloat16")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ConfigError, match=r"needs bitsandbytes\nhint: pip install 'sftpack\[qlora\]'"):
        quantization_config("nf4", True, "bfloat16")


def test_merging_a_qlora_adapter_without_bitsandbytes_names_both_ways_out(tiny_setup: dict[str, Path], adapter: Path,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from sftpack import ConfigError
    from sftpack.lifecycle import merge

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ConfigError, match=r"QLoRA adapter: .* needs bitsandbytes\nhint: pip install .*--original-base"):
        merge(tiny_setup["base"], adapter, tmp_path / "merged")
    assert (merge(tiny_setup["base"], adapter, tmp_path / "merged", original_base=True) / "config.json").is_file()


def nearest(values: Any, code: Any) -> Any:
    """The index of the code nearest each value, computed exactly (float64; no value halfway)."""
    code64 = code.double()
    return torch.bucketize(values.double(), (code64[1:] + code64[:-1]) / 2)


def halfway(values: Any, code: Any) -> Any:
    """Values exactly on a float32 midpoint between two codes, where the kernel's search decides."""
    return torch.isin(values, (code[1:] + code[:-1]) * 0.5)


def scales_are_the_nearest_codes(absmax: Any, state: Any) -> bool:
    """Whether the double-quantized scales in ``state`` are the codes nearest the block maxima
    ``absmax`` (where a value is halfway, the kernel's search decides)."""
    scales = ((absmax - state.offset).view(-1, 256) * (1.0 / state.state2.absmax).unsqueeze(1)).reshape(-1)
    decided = ~halfway(scales, state.state2.code)
    assert decided.float().mean() > 0.99
    return torch.equal(state.absmax.long()[decided], nearest(scales, state.state2.code)[decided])


def test_the_scale_search_takes_the_nearest_code_as_the_cuda_kernel_does() -> None:
    from bitsandbytes.functional import create_dynamic_map

    code = create_dynamic_map()
    torch.manual_seed(0)
    values = torch.cat([torch.rand(100_000) * 2 - 1, torch.randn(100_000) * 1e-2, code, torch.tensor([-1.0, 1.0])])
    decided = ~halfway(values, code)
    assert torch.equal(kernel_search(code, values).long()[decided], nearest(values, code)[decided])


def test_a_4_bit_weight_is_rounded_on_the_cpu_to_the_nearest_codes_as_on_cuda() -> None:
    """NF4 codes and double-quantized scales of a Llama-8B-sized projection: each the nearest
    (bitsandbytes' own CPU search puts about 0.2% of the scales one code off; the GPU does not)."""
    torch.manual_seed(0)
    weight = (torch.randn(4096, 4096) * 0.02).to(torch.bfloat16)
    with scales_rounded_as_on_cuda():
        packed, state = bnb.functional.quantize_4bit(weight, blocksize=64, compress_statistics=True,
                                                     quant_type="nf4")
    assert bnb.functional.quantize_blockwise.__module__ == "bitsandbytes.functional"  # put back after
    blocks = weight.float().view(-1, 64)
    absmax = blocks.abs().amax(1)
    nf4 = bnb.functional.get_4bit_type("nf4", device="cpu")
    scaled = (blocks * (1.0 / absmax).unsqueeze(1)).reshape(-1)
    codes = torch.stack([packed.view(-1) >> 4, packed.view(-1) & 15], 1).reshape(-1).long()
    decided = ~halfway(scaled, nf4)
    assert torch.equal(codes[decided], nearest(scaled, nf4)[decided])

    assert scales_are_the_nearest_codes(absmax, state)


def scales_off_the_nearest_code(model: Any, base: Path) -> list[str]:
    """The 4-bit layers of ``model`` whose double-quantized scales are not the nearest codes to the
    block maxima of ``base``'s own weights."""
    from transformers import AutoModelForCausalLM

    original = dict(AutoModelForCausalLM.from_pretrained(str(base)).named_parameters())
    layers = [(name, layer) for name, layer in model.named_modules() if isinstance(layer, bnb.nn.Linear4bit)]
    assert layers
    off = []
    for name, layer in layers:
        state = layer.weight.quant_state
        weight = original[name.removeprefix("base_model.model.").replace(".base_layer", "") + ".weight"]
        if not scales_are_the_nearest_codes(weight.float().view(-1, 64).abs().amax(1), state):
            off.append(name)
    return off


def test_training_chat_and_merge_load_the_base_with_the_nearest_scales(tiny_setup: dict[str, Path],
                                                                       adapter: Path, tmp_path: Path) -> None:
    run = SFTRecipe(recipe(tiny_setup, tmp_path))
    run.setup()
    assert scales_off_the_nearest_code(run.model, tiny_setup["base"]) == []
    run.cleanup()
    record = TrainingRecord.read(adapter)
    assert record is not None
    chat_and_merge_base = qlora_base(tiny_setup["base"], record, "cpu", False)
    assert scales_off_the_nearest_code(chat_and_merge_base, tiny_setup["base"]) == []

"""Samples during training and chat afterwards: the same prompt ids and stop tokens as training,
under every attention backend — including one that, like PyTorch's varlen kernel, refuses to
generate — and under ZeRO-3 across ranks. Samples land in samples.jsonl and TensorBoard."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sftpack.train import attention, load_config, train  # noqa: E402
from sftpack.train.generate import decoding_attention  # noqa: E402

from .conftest import per_document_eval_loss, read_metrics, torchrun, train_copied_recipe  # noqa: E402

REFUSES = "refuses_generation"
PROMPT = "Name a red cat."


def packed_documents_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                               scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    """Per-document causal attention over a padding-free batch, like PyTorch's varlen kernel on
    a GPU, and like it, no generation: without document boundaries (a KV-cache step) it raises."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        raise RuntimeError(f"{REFUSES} runs on packed training batches only")
    if key.shape[1] != query.shape[1]:
        key, value = (t.repeat_interleave(query.shape[1] // t.shape[1], dim=1) for t in (key, value))
    pieces = [torch.nn.functional.scaled_dot_product_attention(
        query[..., s:e, :], key[..., s:e, :], value[..., s:e, :], is_causal=True, scale=scaling)
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)]
    return torch.cat(pieces, dim=2).transpose(1, 2), None


@pytest.fixture
def refusing_backend() -> Iterator[str]:
    """Registers the backend with transformers and lets recipes name it (padding-free batches)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(REFUSES, packed_documents_attention)
    AttentionMaskInterface.register(REFUSES, lambda *args, **kwargs: None)
    attention.CHOICES.add(REFUSES)
    attention.PADDING_FREE.add(REFUSES)
    yield REFUSES
    attention.CHOICES.discard(REFUSES)
    attention.PADDING_FREE.discard(REFUSES)


def test_the_refusing_backend_really_refuses_and_is_swapped_for_generation(
        tiny_setup: dict[str, Path], refusing_backend: str) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_setup["base"]), attn_implementation=refusing_backend)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(RuntimeError, match="packed training batches only"):
        model.generate(ids, max_new_tokens=2, do_sample=False)
    with decoding_attention(model) as used:
        assert used == "sdpa"
        model.generate(ids, max_new_tokens=2, do_sample=False)
    assert model.config._attn_implementation == refusing_backend, "put back for training"


def samples(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def recipe(setup: dict[str, Path], out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"model": {"path": str(setup["base"]), "attention": "sdpa"}, "method": {"name": "full"},
                           "data": {"pack": str(setup["pack"]), "batch_size": 2},
                           "optim": {"lr": 3e-3, "max_steps": 4, "scheduler": "constant"},
                           "output": {"dir": str(out), "sample_every": 4, "sample_prompts": [PROMPT],
                                      "sample_max_new_tokens": 12, "report_to": []}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


def chat_reply(model: Path, prompt: str, max_new_tokens: int = 12) -> str:
    from sftpack.lifecycle import ChatSession

    return ChatSession(model).reply(prompt, max_new_tokens)


@pytest.mark.parametrize("backend", ["sdpa", "eager", REFUSES])
def test_samples_equal_what_chat_says_with_the_saved_model(tiny_setup: dict[str, Path], tmp_path: Path,
                                                           backend: str, refusing_backend: str) -> None:
    """Four steps in, the model writes a few words and no stop token yet: the sample taken at
    the last step and `sftpack chat` on the saved model agree only if both render the same
    prompt ids and stop at the same tokens. (Eager attention generates with eager kernels, chat
    with SDPA: there the sample is only required to exist.)"""
    model = train(load_config(raw=recipe(tiny_setup, tmp_path, model={"attention": backend})))
    taken = samples(tmp_path)
    assert [s["step"] for s in taken] == [4] and taken[0]["prompt"] == PROMPT
    assert taken[0]["reply"].strip()
    if backend != "eager":
        assert taken[0]["reply"] == chat_reply(model, PROMPT)


def test_a_copied_shipped_recipe_samples_and_evaluates_as_is(tiny_eval_setup: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """qwen3_8b_lora as shipped (bf16, gradient checkpointing, LoRA, attention: auto, samples
    and TensorBoard), on the tiny model, with samples and evaluations every two steps."""
    result, run = train_copied_recipe("qwen3_8b_lora", tiny_eval_setup, tmp_path, "optim.max_steps=4",
                                      "optim.grad_accum=2", "output.sample_every=2", "output.eval_every=2",
                                      "output.sample_max_new_tokens=8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [s["step"] for s in samples(run)] == [2, 4]
    assert [r["step"] for r in read_metrics(run)[1]] == [2, 4]
    assert "eval at step 4" in result.stdout and "sample at step 4" in result.stdout
    assert (run / "loss.png").is_file() and (run / "model" / "adapter_config.json").is_file()
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert "eval/loss" in events.Tags()["scalars"]
    assert any(tag.startswith("samples") for tag in events.Tags()["tensors"])


def test_zero3_samples_on_two_ranks_neither_hang_nor_skip_weights(tiny_eval_setup: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """Each rank holds half the weights: every rank takes part in generation, and the sample is
    what the gathered model says."""
    pytest.importorskip("deepspeed")
    import yaml

    raw = recipe(tiny_eval_setup, tmp_path / "run", distributed={"deepspeed": "zero3"},
                 output={"eval_every": 2})
    raw["data"]["pack"] = str(tiny_eval_setup["pack"])
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([*torchrun(), "-m", "sftpack", "train", str(tmp_path / "recipe.yaml")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    taken = samples(tmp_path / "run")
    assert [s["step"] for s in taken] == [4] and taken[0]["reply"].strip()
    assert taken[0]["reply"] == chat_reply(tmp_path / "run" / "model", PROMPT)
    evals = read_metrics(tmp_path / "run")[1]
    assert [r["step"] for r in evals] == [2, 4]
    # each rank scored half the validation rows; the logged loss is over all of them
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "model"), attn_implementation="sdpa")
    reference, tokens = per_document_eval_loss(final, tiny_eval_setup["validation"])
    assert evals[-1]["eval_tokens"] == tokens and evals[-1]["eval_loss"] == pytest.approx(reference, rel=1e-5)

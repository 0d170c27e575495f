"""After training: merge, chat with the training template, ready recipes, template check."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from sftpack.train import load_config, train  # noqa: E402

from .conftest import DEMO, write_lines  # noqa: E402


def sftpack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sftpack", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tiny_setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lifecycle")
    raw = {"model": {"path": str(tiny_setup["base"]), "attention": "sdpa"}, "method": {"name": "lora", "lora_r": 8},
           "data": {"pack": str(tiny_setup["pack"]), "batch_size": 2},
           "optim": {"lr": 2e-2, "max_steps": 6, "scheduler": "constant"}, "output": {"dir": str(root / "run")}}
    adapter = train(load_config(raw=raw))
    return {"root": root, "base": tiny_setup["base"], "pack": tiny_setup["pack"], "adapter": adapter}


def test_merged_model_logits_equal_base_plus_adapter(trained: dict[str, Path]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = trained["root"] / "merged"
    result = sftpack("merge", str(trained["base"]), str(trained["adapter"]), str(out))
    assert result.returncode == 0, result.stderr
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(trained["base"])),
                                             str(trained["adapter"]))
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    assert merged.dtype == torch.float32 and (out / "tokenizer.json").is_file()
    with torch.no_grad():
        assert torch.allclose(with_adapter(ids).logits, merged(ids).logits, atol=1e-5)


def test_chat_one_shot_with_an_adapter_uses_the_training_template(trained: dict[str, Path]) -> None:
    result = sftpack("chat", str(trained["base"]), "--adapter", str(trained["adapter"]), "--prompt", "Name a red cat.",
                     "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    warned = sftpack("chat", str(trained["base"]), "--adapter", str(trained["adapter"]), "--template", "zephyr",
                     "--prompt", "hi", "--max-new-tokens", "2")
    assert warned.returncode == 0 and "trained with template" in warned.stderr


@pytest.mark.parametrize(("name", "expected"), [("qwen3_8b_lora", "adapter_config.json"),
                                              ("qwen3_8b_qlora", "adapter_config.json"),
                                              ("llama3_2_3b_full", "config.json")])
def test_a_copied_recipe_trains_as_is(trained: dict[str, Path], tmp_path: Path, name: str, expected: str) -> None:
    if name.endswith("_full"):
        pytest.importorskip("deepspeed")  # full recipes shard with DeepSpeed ZeRO
    if name.endswith("_qlora"):
        pytest.importorskip("bitsandbytes")  # its 4-bit layers run on the CPU too
    assert name in sftpack("configs", "list", "-p", name.split("_")[0]).stdout
    assert sftpack("configs", "copy", name, str(tmp_path)).returncode == 0
    result = sftpack("train", str(tmp_path / f"{name}.yaml"), f"model.path={trained['base']}",
                     f"data.pack={trained['pack']}", f"output.dir={tmp_path / 'run'}", "optim.max_steps=2",
                     "optim.grad_accum=2", "model.dtype=float32", "output.sample_every=null")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "model" / expected).is_file()


def test_template_check_flags_a_wrong_template() -> None:
    same = sftpack("template", "check", "--tokenizer", str(DEMO))
    assert same.returncode == 0 and "2/2 records token-identical" in same.stdout
    xtuner_chatml = sftpack("template", "check", "--tokenizer", str(DEMO), "--template", "qwen_chat")
    assert xtuner_chatml.returncode == 0, xtuner_chatml.stdout
    wrong = sftpack("template", "check", "--tokenizer", str(DEMO), "--template", "zephyr")
    assert wrong.returncode == 1 and "differs at token" in wrong.stdout


def test_template_check_reads_data_as_training_does_and_names_file_and_line(
        tmp_path: Path, tokenizer_dir: Callable[[str], Path]) -> None:
    # A JSON array of ShareGPT records, XTuner's multi-turn format, and OpenAI tool calls with
    # `content: null`: every record training accepts is compared, each named by file:line.
    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps([{"conversations": [{"from": "human", "value": "Hi"},
                                                       {"from": "gpt", "value": "Hello!"}]}] * 2, indent=1))
    xtuner = write_lines(tmp_path / "xtuner.jsonl", [json.dumps({"conversation": [
        {"system": "Be brief.", "input": "2+2?", "output": "4"}, {"input": "3+3?", "output": "6"}]})])
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    openai = write_lines(tmp_path / "calls.jsonl", [json.dumps({"tools": tools, "messages": [
        {"role": "user", "content": "1+2?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "3"}, {"role": "assistant", "content": "3"}]})])
    result = sftpack("template", "check", str(sharegpt), str(xtuner), str(openai), "--tokenizer",
                     str(tokenizer_dir("qwen3")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4/4 records token-identical" in result.stdout
    wrong = sftpack("template", "check", str(xtuner), str(sharegpt), "--tokenizer", str(tokenizer_dir("qwen3")),
                    "--template", "zephyr")
    assert wrong.returncode == 1
    assert f"{xtuner}:1: differs at token" in wrong.stdout and f"{sharegpt}:2 (element 0)" in wrong.stdout
    assert "Traceback" not in wrong.stderr


def test_template_check_flags_a_generation_prompt_that_training_never_saw(tmp_path: Path) -> None:
    template = tmp_path / "eager.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\nSure! {% endif %}")
    result = sftpack("template", "check", "--tokenizer", str(DEMO), "--template", str(template))
    assert result.returncode == 1
    assert "prompt differs" in result.stdout and "before message 1" in result.stdout


def test_merge_and_chat_run_remote_model_code_when_training_did(tmp_path: Path) -> None:
    from sftpack.lifecycle import remote_code

    (tmp_path / "sftpack_train.json").write_text(json.dumps({"config": {"model": {"trust_remote_code": True}}}))
    assert remote_code(None, tmp_path) is True
    assert remote_code(tmp_path.parent) is False  # no training record: the Hugging Face default

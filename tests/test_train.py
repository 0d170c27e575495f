"""Training on CPU with a tiny random-init model: loss goes down for full and LoRA, resume
reproduces the uninterrupted loss sequence, packed loss and gradients equal unpacked ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sftpack import ConfigError, PackDataset  # noqa: E402
from sftpack.data import collate_padded, collate_padding_free, sum_token_loss  # noqa: E402
from sftpack.train import load_config, train  # noqa: E402

from .conftest import torchrun  # noqa: E402


@pytest.fixture
def setup(tiny_setup: dict[str, Path]) -> dict[str, Path]:
    return tiny_setup


def settings(setup: dict[str, Path], out: Path, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"path": str(setup["base"]), "attention": "sdpa"},
        "method": {"name": "full"},
        "data": {"pack": str(setup["pack"]), "batch_size": 2},
        "optim": {"lr": 3e-3, "max_steps": 12, "scheduler": "constant"},
        "output": {"dir": str(out)},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    return raw


def losses(out: Path) -> list[float]:
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if "loss" in r]


# LoRA adapts a random-init base slowly, so it gets more steps and a milder bar.
@pytest.mark.parametrize(("method", "lr", "steps", "ratio"), [("full", 3e-3, 12, 0.7), ("lora", 1e-2, 24, 0.95)])
def test_loss_goes_down(setup: dict[str, Path], tmp_path: Path, method: str, lr: float, steps: int,
                        ratio: float) -> None:
    raw = settings(setup, tmp_path, method__name=method, optim__lr=lr, optim__max_steps=steps)
    model_dir = train(load_config(raw=raw))
    curve = losses(tmp_path)
    assert len(curve) == steps
    assert sum(curve[-3:]) / 3 < ratio * sum(curve[:3]) / 3, curve
    expected = "adapter_config.json" if method == "lora" else "config.json"
    assert (model_dir / expected).is_file() and (model_dir / "sftpack_train.json").is_file()


def test_resume_reproduces_the_uninterrupted_loss_sequence(setup: dict[str, Path], tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    train(load_config(raw=settings(setup, whole, optim__max_steps=6)))
    split = tmp_path / "split"
    train(load_config(raw=settings(setup, split, optim__max_steps=3, output__save_every=3)))
    train(load_config(raw=settings(setup, split, optim__max_steps=6, output__save_every=3)))
    assert losses(split) == pytest.approx(losses(whole), abs=1e-6)


def test_resume_refuses_a_recipe_with_another_schedule_or_data_order_unless_allowed(
        setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sftpack import ConfigError

    out = tmp_path / "run"
    first = settings(setup, out, optim__max_steps=3, output__save_every=3, optim__scheduler="cosine")
    train(load_config(raw=first))
    for change, named in (({"data__batch_size": 1}, "data.batch_size: 2 -> 1"),
                          ({"optim__max_steps": 6}, "optim.max_steps: 3 -> 6"),
                          ({"data__seed": 7}, "data.seed: 0 -> 7")):
        changed = settings(setup, out, optim__max_steps=3, output__save_every=3, optim__scheduler="cosine")
        for dotted, value in change.items():
            section, key = dotted.split("__")
            changed[section][key] = value
        with pytest.raises(ConfigError, match="was made by another recipe") as refused:
            train(load_config(raw=changed))
        assert named in str(refused.value) and "output.allow_resume_changes" in str(refused.value)
    allowed = settings(setup, out, optim__max_steps=6, output__save_every=3, optim__scheduler="cosine",
                       output__allow_resume_changes=True)
    train(load_config(raw=allowed))
    said = capsys.readouterr().out
    assert "although the recipe changed (output.allow_resume_changes): optim.max_steps: 3 -> 6" in said
    assert len(losses(out)) == 6, "resumed at step 3 and went on to 6"


def packed_batch(row: dict[str, Any], shape: str) -> dict[str, Any]:
    if shape == "padding_free":
        return collate_padding_free([row], "pt")
    return collate_padded([row], document_mask=True, return_tensors="pt")


@pytest.mark.parametrize(("attention", "shape"), [("sdpa", "padded"), ("sdpa", "padding_free"),
                                                  ("eager", "padding_free")])
def test_packed_loss_and_gradients_equal_unpacked(setup: dict[str, Path], attention: str, shape: str) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(setup["base"]), attn_implementation=attention,
                                                 dtype=torch.float32)
    ds = PackDataset(setup["pack"])
    row = next(ds[i] for i in range(len(ds)) if len(ds[i]["cu_seqlens"]) > 3)

    batch = packed_batch(row, shape)
    packed = sum_token_loss(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
    packed.backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    unpacked = torch.zeros(())
    cu = row["cu_seqlens"]
    for start, end in zip(cu[:-1], cu[1:], strict=True):
        ids = torch.from_numpy(row["input_ids"][start:end].astype("int64"))[None]
        labels = torch.from_numpy(row["labels"][start:end])[None]
        unpacked = unpacked + sum_token_loss(model(input_ids=ids).logits, labels)
    unpacked.backward()
    assert abs(float(packed) - float(unpacked)) < 1e-5 * max(1.0, abs(float(unpacked)))
    for p, g in zip(model.parameters(), packed_grads, strict=True):
        assert (p.grad - g).abs().max() < 1e-5


def test_chunked_loss_equals_the_loss_from_full_logits(setup: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    from sftpack.train.loss import TokenLoss

    model = AutoModelForCausalLM.from_pretrained(str(setup["base"]), attn_implementation="sdpa", dtype=torch.float32)
    batch = collate_padding_free([PackDataset(setup["pack"])[i] for i in range(2)], "pt")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    results = []
    for chunk in (0, 37):  # 0: full logits; 37 does not divide the row, so the last chunk is short
        model.zero_grad()
        loss_model = TokenLoss(model, chunk)
        assert loss_model.chunked == (chunk > 0)
        loss = loss_model(labels=batch["labels"], **inputs)
        loss.backward()
        results.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    (full, full_grads), (chunked, chunked_grads) = results
    assert abs(full - chunked) < 1e-5 * abs(full)
    for a, b in zip(full_grads, chunked_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)  # only the summation order differs


def test_recipe_problems_are_reported_together(setup: dict[str, Path], tmp_path: Path) -> None:
    raw = settings(setup, tmp_path)
    raw["method"]["name"] = "lorra"
    raw["optim"]["lr"] = -1
    raw["optim"]["learning_rate"] = 1
    raw["data"]["max_tokens"] = 100
    with pytest.raises(ConfigError) as error:
        load_config(raw=raw)
    text = str(error.value)
    for fragment in ("method.name", "optim.lr", "optim.learning_rate", "exactly one of batch_size or max_tokens"):
        assert fragment in text


def test_overrides_on_the_command_line(setup: dict[str, Path], tmp_path: Path) -> None:
    config = load_config(raw=settings(setup, tmp_path), overrides=["optim.lr=1e-4", "data.batch_size=8"])
    assert config.optim.lr == 1e-4 and config.data.batch_size == 8


def test_a_pack_from_another_tokenizer_is_refused(setup: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other-model"
    shutil.copytree(setup["base"], other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    tokenizer["added_tokens"][0]["content"] = "<|changed|>"
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    raw = settings(setup, tmp_path / "out")
    raw["model"]["path"] = str(other)
    with pytest.raises(ConfigError, match="another tokenizer"):
        train(load_config(raw=raw))


def test_two_process_torchrun_training(setup: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(settings(setup, tmp_path / "out", optim__max_steps=4)))
    subprocess.run([*torchrun(), "-m", "sftpack", "train", str(recipe)], check=True, timeout=600, capture_output=True)
    assert len(losses(tmp_path / "out")) == 4
    assert (tmp_path / "out" / "model" / "config.json").is_file()


def test_ranks_that_choose_different_kernels_are_refused_naming_them(setup: dict[str, Path], tmp_path: Path) -> None:
    """As on a cluster where one node lacks the attention package the others run."""
    import yaml

    from sftpack.train.attention import choose_attention

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(settings(setup, tmp_path / "out", optim__max_steps=2, model__attention="auto")))
    (tmp_path / "worker.py").write_text(
        "import os, sys\n"
        "import sftpack.train.recipe as recipe\n"
        "from sftpack.cli import main\n"
        "if os.environ['RANK'] == '1':\n"
        "    recipe.choose_attention = lambda requested: 'eager'\n"
        "sys.exit(main(['train', sys.argv[1]]))\n")
    result = subprocess.run([*torchrun(), str(tmp_path / "worker.py"), str(recipe)], timeout=600,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert (f"model.attention: the ranks chose different kernels ({choose_attention('auto')} on rank 0; eager on "
            "rank 1)\nhint: install the same packages on every node") in result.stderr
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_quickstart_leaves_a_pack_a_model_and_metrics(tmp_path: Path) -> None:
    # As README runs it: a relative --out, from the folder it is typed in.
    result = subprocess.run([sys.executable, "-m", "sftpack", "quickstart", "--out", "quickstart"],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4/4 right" in result.stdout
    out = tmp_path / "quickstart"
    assert (out / "pack" / "manifest.json").is_file()
    assert (out / "run" / "model" / "config.json").is_file()
    assert not (out / "metrics.jsonl").exists(), "one run, one metrics.jsonl (the studio lists each as a run)"
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert steps and [r["step"] for r in evals] == [100, 200, 300], "the held-out split is evaluated"
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert "held-out eval loss" in result.stdout
    validation = json.loads((out / "pack" / "manifest.json").read_text())["validation"]
    assert 100 <= validation["records"] <= 200, "each of 3,000 records held out with probability 0.05"
    chat = subprocess.run([sys.executable, "-m", "sftpack", "chat", str(out / "run" / "model"),
                           "--prompt", "Name a red cat."], capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() == "A red cat could be called Redcat."
    # The folder moves and its recipe still trains, from anywhere: its paths are its own.
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    out.rename(moved)
    again = subprocess.run([sys.executable, "-m", "sftpack", "train", str(moved / "recipe.yaml"), "optim.max_steps=2",
                            "output.eval_every=0", f"output.dir={tmp_path / 'again'}"],
                           capture_output=True, text=True, timeout=300, cwd=moved.parent.parent.parent)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "model" / "config.json").is_file()


def test_recipe_paths_are_relative_to_the_recipe_and_overrides_to_the_command(
        setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import yaml

    folder = tmp_path / "experiment"
    folder.mkdir()
    raw = settings(setup, Path("runs/first"))
    raw["model"]["path"] = os.path.relpath(setup["base"], folder)
    raw["data"]["pack"] = os.path.relpath(setup["pack"], folder)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    config = load_config("experiment/recipe.yaml")
    assert Path(config.model.path).resolve() == setup["base"].resolve()
    assert Path(config.data.pack).resolve() == setup["pack"].resolve()
    assert Path(config.output.dir) == folder / "runs" / "first"
    assert load_config("experiment/recipe.yaml", ["output.dir=mine"]).output.dir == "mine"


def test_missing_model_and_pack_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    raw = settings({"base": tmp_path / "no-model", "pack": tmp_path / "no-pack"}, tmp_path / "out",
                   optim__lr=-1)
    raw["distributed"] = {"deepspeed": "zero9"}
    with pytest.raises(ConfigError) as error:
        load_config(raw=raw)
    text = str(error.value)
    assert "4 problem(s)" in text
    assert f"model.path: {tmp_path / 'no-model'} does not exist" in text and "huggingface-cli download" in text
    assert f"data.pack: {tmp_path / 'no-pack'} does not exist" in text and "sftpack preprocess" in text
    assert "optim.lr" in text and "distributed.deepspeed: 'zero9'" in text
    (tmp_path / "no-model").mkdir()
    with pytest.raises(ConfigError, match="is not a Hugging Face model folder"):
        load_config(raw=raw)


def test_a_missing_recipe_file_says_how_to_get_one(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "sftpack", "train", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: recipe" in result.stderr and "sftpack configs copy" in result.stderr
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr


def test_fused_kernels_are_chosen_where_they_run() -> None:
    from sftpack import ConfigError
    from sftpack.train.kernels import choose_kernels, liger_available

    assert choose_kernels("none") == "none"
    assert choose_kernels("auto") == ("liger" if liger_available() else "none")
    if not liger_available():
        with pytest.raises(ConfigError, match=r"liger needs a CUDA GPU.*\n.*sftpack\[kernels\]"):
            choose_kernels("liger")
    with pytest.raises(ConfigError, match="model.kernels: 'triton' is not one of"):
        choose_kernels("triton")


def liger_or_skip() -> None:
    """Skips where liger-kernel is missing or will not import on this machine (the Triton of
    torch 2.6 raises at import where it finds no GPU driver; later ones import anywhere)."""
    pytest.importorskip("liger_kernel")
    from sftpack.train.kernels import liger_import_problem

    problem = liger_import_problem()
    if problem:
        pytest.skip(problem)


def test_an_installed_liger_that_cannot_import_here_is_not_chosen(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """liger-kernel 0.8 refuses transformers 4.x at import: auto trains without it and says so,
    an explicit choice is an error naming the fix. (CUDA is pretended; nothing runs on it.)"""
    liger_or_skip()
    from sftpack import ConfigError
    from sftpack.train.kernels import choose_kernels

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_kernels("auto") == "liger"
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)  # its import now fails
    assert choose_kernels("auto") == "none"
    assert "note: model.kernels=auto: Liger cannot import liger-kernel here" in capsys.readouterr().out
    assert choose_kernels("auto", say_why=False) == "none"  # the other ranks of a multi-process run
    assert capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match=r"liger cannot import liger-kernel here: .*\nhint: .*transformers >= 5"):
        choose_kernels("liger")


@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_liger_fuses_the_model_it_is_given_and_no_model_built_after_it(adapter: bool,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Liger swaps the classes of the family's transformers module as well as the given model's
    modules; a model built later in the same process (the GPU bench's baseline, a reference, a
    chat after training) must get transformers' own modules. Patching runs on the CPU."""
    liger_or_skip()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen3Config
    from transformers.models.qwen3 import modeling_qwen3

    from sftpack.train.kernels import apply_kernels

    # Liger's RoPE (a Triton kernel) stays in the module by design: put transformers' back after
    # this test, for the CPU tests that run Qwen3 models later in this process.
    monkeypatch.setattr(modeling_qwen3, "apply_rotary_pos_emb", modeling_qwen3.apply_rotary_pos_emb)

    config = Qwen3Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = AutoModelForCausalLM.from_config(config)
    if adapter:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    apply_kernels(model, "liger")
    fused = model.get_base_model() if adapter else model
    assert fused.model.norm._get_name() == "LigerRMSNorm"
    assert {layer.mlp._get_name() for layer in fused.model.layers} == {"LigerSwiGLUMLP"}

    later = AutoModelForCausalLM.from_config(config)
    assert later.model.norm._get_name() == "Qwen3RMSNorm"
    assert {layer.mlp._get_name() for layer in later.model.layers} == {"Qwen3MLP"}


@pytest.mark.parametrize(("capability", "flash_packages", "torch_varlen", "transformers_fa4", "chosen"), [
    ((9, 0), {"flash-attn-4", "flash-attn"}, True, True, "flash_attention_4"),
    ((10, 0), {"flash-attn-4"}, True, True, "flash_attention_4"),
    ((9, 0), {"flash-attn-4", "flash-attn"}, True, False, "flash_attention_2"),  # transformers 4 cannot call FA4
    ((10, 0), {"flash-attn-4"}, True, False, "varlen"),
    ((8, 0), {"flash-attn-4", "flash-attn"}, True, True, "flash_attention_2"),  # FA4 needs Hopper or newer
    ((9, 0), {"flash-attn"}, True, True, "flash_attention_2"),
    ((8, 0), {"flash-attn-4"}, True, True, "varlen"),  # flash-attn-4's `flash_attn` module is not flash-attn 2
    ((9, 0), set(), True, True, "varlen"),
    ((9, 0), set(), False, True, "sdpa"),
    (None, {"flash-attn-4", "flash-attn"}, False, True, "sdpa"),  # no GPU
])
def test_auto_attention_takes_the_fastest_kernel_that_runs_here(
        monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int] | None, flash_packages: set[str],
        torch_varlen: bool, transformers_fa4: bool, chosen: str) -> None:
    from sftpack.train import attention

    monkeypatch.setattr(attention, "_cuda_capability", lambda: capability)
    monkeypatch.setattr(attention, "_flash_distributions", lambda: flash_packages)
    monkeypatch.setattr(attention, "torch_varlen_available", lambda: torch_varlen)
    monkeypatch.setattr(attention, "_transformers_knows", lambda implementation: transformers_fa4)
    assert attention.choose_attention("auto") == chosen


def test_a_flash_attention_kernel_that_cannot_run_here_is_an_error_with_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sftpack.train import attention

    monkeypatch.setattr(attention, "_cuda_capability", lambda: (8, 0))
    monkeypatch.setattr(attention, "_flash_distributions", lambda: {"flash-attn-4"})
    with pytest.raises(ConfigError, match=r"flash_attention_4 needs flash-attn-4, a GPU of compute capability 9.0.*\n"
                                          r"hint: pip install flash-attn-4"):
        attention.choose_attention("flash_attention_4")
    with pytest.raises(ConfigError, match=r"flash_attention_2 needs a CUDA GPU and the flash-attn package"):
        attention.choose_attention("flash_attention_2")


def test_an_unknown_kernel_choice_is_reported_with_the_other_recipe_problems(setup: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    from sftpack import ConfigError

    with pytest.raises(ConfigError, match="model.kernels"):
        load_config(raw=settings(setup, tmp_path, model__kernels="triton"))

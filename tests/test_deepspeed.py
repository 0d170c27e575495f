"""DeepSpeed ZeRO on the CPU (one process, gloo): it trains like plain torch, resumes exactly,
and `sftpack convert` turns its sharded checkpoints into Hugging Face folders that hold the same
weights as the model training ended with. Skipped where DeepSpeed is not installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("deepspeed")

from sftpack import ConfigError  # noqa: E402
from sftpack.cli import main  # noqa: E402
from sftpack.train import load_config, train  # noqa: E402


@pytest.fixture
def setup(tiny_setup: dict[str, Path]) -> dict[str, Path]:
    return tiny_setup


def recipe(setup: dict[str, Path], out: Path, zero: str | None, method: str = "full", steps: int = 4,
           save_every: int | None = None) -> Any:
    raw: dict[str, Any] = {"model": {"path": str(setup["base"]), "attention": "sdpa"},
                           "method": {"name": method},
                           "data": {"pack": str(setup["pack"]), "batch_size": 2},
                           "optim": {"lr": 3e-3, "max_steps": steps, "scheduler": "constant", "grad_accum": 2},
                           "output": {"dir": str(out), "save_every": save_every, "report_to": []},
                           "distributed": {"deepspeed": zero}}
    return load_config(raw=raw)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("zero", ["zero1", "zero2", "zero3"])
def test_zero_trains_like_plain_torch(setup: dict[str, Path], tmp_path: Path, zero: str) -> None:
    train(recipe(setup, tmp_path / "plain", None))
    train(recipe(setup, tmp_path / zero, zero))
    assert losses(tmp_path / zero) == pytest.approx(losses(tmp_path / "plain"), rel=1e-4)


def test_zero_resume_reproduces_the_uninterrupted_run(setup: dict[str, Path], tmp_path: Path) -> None:
    train(recipe(setup, tmp_path / "whole", "zero2", steps=4))
    train(recipe(setup, tmp_path / "split", "zero2", steps=2, save_every=2))
    train(recipe(setup, tmp_path / "split", "zero2", steps=4, save_every=2))
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "whole"), rel=1e-5)


def test_convert_full_zero3_checkpoint_equals_the_final_model(setup: dict[str, Path], tmp_path: Path) -> None:
    final = train(recipe(setup, tmp_path, "zero3", steps=2, save_every=2))
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "latest").is_file() and not (checkpoint / "config.json").exists()
    assert main(["convert", str(checkpoint), str(tmp_path / "hf")]) == 0
    converted, reference = weights(tmp_path / "hf"), weights(final)
    assert converted.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(converted[name], tensor), name
    assert json.loads((tmp_path / "hf" / "sftpack_train.json").read_text())["template"]


def test_convert_lora_zero2_checkpoint_gives_the_adapter(setup: dict[str, Path], tmp_path: Path) -> None:
    final = train(recipe(setup, tmp_path, "zero2", method="lora", steps=2, save_every=2))
    assert main(["convert", str(tmp_path / "checkpoint-2"), str(tmp_path / "adapter")]) == 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    converted, reference = weights(tmp_path / "adapter"), weights(final)
    assert converted.keys() == reference.keys() and converted
    for name, tensor in reference.items():
        assert torch.allclose(converted[name], tensor), name


def test_convert_explains_what_it_cannot_convert(setup: dict[str, Path], tmp_path: Path) -> None:
    final = train(recipe(setup, tmp_path, None, steps=1))
    with pytest.raises(ConfigError, match="already a Hugging Face folder"):
        from sftpack.train.zero import convert_checkpoint

        convert_checkpoint(final, tmp_path / "out")


def test_zero_configs_are_checked(setup: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a shipped config"):
        train(recipe(setup, tmp_path, "zero9"))
    with pytest.raises(ConfigError, match="ZeRO-3"):
        train(recipe(setup, tmp_path, "zero3", method="qlora"))

"""Held-out evaluation: the eval loss of a packed validation pack equals the loss of its
conversations scored one at a time, it is normalized over all ranks as the training loss is,
early stopping stops, best/ holds the best eval loss, and resume keeps all of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sftpack import ConfigError, PackDataset  # noqa: E402
from sftpack.data.loader import evaluation_batches  # noqa: E402
from sftpack.train import load_config, train  # noqa: E402
from sftpack.train.recipe import SFTRecipe  # noqa: E402

from .conftest import per_document_eval_loss, read_metrics  # noqa: E402


def recipe(setup: dict[str, Path], out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"model": {"path": str(setup["base"]), "attention": "sdpa"}, "method": {"name": "full"},
                           "data": {"pack": str(setup["pack"]), "batch_size": 3},
                           "optim": {"lr": 3e-3, "max_steps": 8, "scheduler": "constant"},
                           "output": {"dir": str(out), "eval_every": 2, "report_to": []}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


@pytest.mark.parametrize(("attention", "batch"), [("sdpa", {"batch_size": 3}), ("eager", {"batch_size": 2}),
                                                  ("sdpa", {"batch_size": None, "max_tokens": 300})])
def test_packed_eval_loss_equals_the_per_document_loss(tiny_eval_setup: dict[str, Path], tmp_path: Path,
                                                       attention: str, batch: dict[str, Any]) -> None:
    run = SFTRecipe(load_config(raw=recipe(tiny_eval_setup, tmp_path, model={"attention": attention}, data=batch)))
    run.setup()
    assert run.evaluator is not None, "the pack's validation split is used without being named"
    run.model.eval()
    result = run.evaluator.run(run._forward_sum_loss)
    reference, tokens = per_document_eval_loss(run.model, tiny_eval_setup["validation"])
    assert result.tokens == tokens == PackDataset(tiny_eval_setup["validation"]).manifest["counts"]["trained_tokens"]
    assert abs(result.loss - reference) < 1e-5 * reference


def test_ranks_split_the_eval_rows_and_the_loss_is_normalized_over_all_of_them(
        tiny_eval_setup: dict[str, Path], tmp_path: Path) -> None:
    validation = PackDataset(tiny_eval_setup["validation"])
    for world in (1, 2, 3, len(validation) + 2):
        plans = [evaluation_batches(validation, 2, None, rank, world) for rank in range(world)]
        assert len({len(p) for p in plans}) == 1, "every rank runs the same number of forward passes"
        rows = sorted(int(i) for plan in plans for batch in plan for i in batch)
        assert rows == list(range(len(validation))), "every row exactly once"
    run = SFTRecipe(load_config(raw=recipe(tiny_eval_setup, tmp_path)))
    run.setup()
    run.model.eval()
    assert run.evaluator is not None
    whole = run.evaluator.local_totals(run._forward_sum_loss)
    shards = []
    for rank in range(3):
        run.evaluator.batches = evaluation_batches(validation, 3, None, rank, 3)
        shards.append(run.evaluator.local_totals(run._forward_sum_loss))
    combined = sum(shards)
    assert combined[1] == whole[1] and abs(float(combined[0] - whole[0])) < 1e-6 * float(whole[0])


def test_early_stopping_stops_when_the_eval_loss_stops_improving(tiny_eval_setup: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """LoRA at lr 1e-12 changes no output: every evaluation equals the first, none improves."""
    raw = recipe(tiny_eval_setup, tmp_path, method={"name": "lora"}, optim={"lr": 1e-12, "max_steps": 40},
                 output={"early_stopping_patience": 2, "save_best": True})
    model = train(load_config(raw=raw))
    steps, evals = read_metrics(tmp_path)
    assert [e["step"] for e in evals] == [2, 4, 6]
    assert evals[0]["eval_loss"] == evals[1]["eval_loss"] == evals[2]["eval_loss"]
    assert steps[-1]["step"] == 6, "training stopped at the third evaluation"
    assert (model / "adapter_config.json").is_file()
    best = json.loads((tmp_path / "best" / "sftpack_train.json").read_text())
    assert best["step"] == 2 and best["eval_loss"] == pytest.approx(evals[0]["eval_loss"], abs=1e-6)


def test_best_holds_the_model_with_the_best_eval_loss(tiny_eval_setup: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    train(load_config(raw=recipe(tiny_eval_setup, tmp_path, output={"save_best": True})))
    _, evals = read_metrics(tmp_path)
    best = min(evals, key=lambda e: e["eval_loss"])
    record = json.loads((tmp_path / "best" / "sftpack_train.json").read_text())
    assert record["step"] == best["step"] and evals[-1]["best_eval_loss"] == best["eval_loss"]
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "best"), attn_implementation="sdpa")
    reloaded, _ = per_document_eval_loss(model, tiny_eval_setup["validation"])
    assert reloaded == pytest.approx(best["eval_loss"], rel=1e-5)
    assert not (tmp_path / "best.tmp").exists()


def test_resume_continues_evaluations_and_the_best_so_far(tiny_eval_setup: dict[str, Path], tmp_path: Path) -> None:
    train(load_config(raw=recipe(tiny_eval_setup, tmp_path / "whole", output={"save_best": True})))
    split = tmp_path / "split"
    train(load_config(raw=recipe(tiny_eval_setup, split, optim={"max_steps": 4},
                                 output={"save_best": True, "save_every": 4})))
    train(load_config(raw=recipe(tiny_eval_setup, split, output={"save_best": True, "save_every": 4})))
    whole_evals, split_evals = read_metrics(tmp_path / "whole")[1], read_metrics(split)[1]
    assert [(e["step"], e["best_step"]) for e in split_evals] == [(e["step"], e["best_step"]) for e in whole_evals]
    for a, b in zip(split_evals, whole_evals, strict=True):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-6)


def test_evaluation_settings_are_checked(tiny_setup: dict[str, Path], tiny_eval_setup: dict[str, Path],
                                        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="output.save_best: needs output.eval_every"):
        load_config(raw=recipe(tiny_setup, tmp_path, output={"eval_every": None, "save_best": True}))
    no_split = recipe(tiny_setup, tmp_path, output={"early_stopping_patience": 3})
    with pytest.raises(ConfigError, match="--val-size"):
        train(load_config(raw=no_split))
    disabled = recipe(tiny_eval_setup, tmp_path / "off", optim={"max_steps": 2}, output={"eval_every": 0})
    train(load_config(raw=disabled))
    assert read_metrics(tmp_path / "off")[1] == []

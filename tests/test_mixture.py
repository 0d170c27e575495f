"""Several packs in one training run: each pack gets its weight's share of every epoch's tokens
(within 1%), downsampled packs contribute other rows each epoch, the order is fixed by seed and
epoch and resumes exactly, only packs of one tokenizer and template mix, and training logs the
loss of each pack (their token-weighted mean is the step's loss)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sftpack import ConfigError, PackLoader, PackMixture
from sftpack.data import collate_padding_free
from sftpack.preprocess import preprocess

from .conftest import DEMO, write_lines


def conversations(topic: str, n: int) -> list[str]:
    return [json.dumps({"messages": [
        {"role": "user", "content": f"Tell me about {topic} number {i}."},
        {"role": "assistant", "content": f"{topic.capitalize()} {i} is fine." + " More words here." * (i % 9)}]})
        for i in range(n)]


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mixture")
    made = {}
    for topic, n in (("chat", 1500), ("code", 600)):
        data = write_lines(root / f"{topic}.jsonl", conversations(topic, n))
        preprocess([data], DEMO, root / topic, max_length=128)
        made[topic] = root / topic
    return made


def epoch_tokens_by_pack(mixture: PackMixture, epoch: int) -> Counter[str]:
    mixture.set_epoch(epoch)
    tokens: Counter[str] = Counter()
    for index in range(len(mixture)):
        tokens[mixture.pack_of(index)] += len(mixture[index]["input_ids"])
    return tokens


@pytest.mark.parametrize("weights", [(1, 1), (1, 3), (5, 1)])
def test_each_pack_gets_its_weights_share_of_an_epochs_tokens(packs: dict[str, Path],
                                                               weights: tuple[int, int]) -> None:
    mixture = PackMixture([{"path": packs["chat"], "weight": weights[0]},
                           {"path": packs["code"], "weight": weights[1]}], seed=1)
    for epoch in (0, 1):
        tokens = epoch_tokens_by_pack(mixture, epoch)
        total = sum(tokens.values())
        assert tokens["chat"] / total == pytest.approx(weights[0] / sum(weights), abs=0.01)
        assert tokens["code"] / total == pytest.approx(weights[1] / sum(weights), abs=0.01)
        assert mixture.lengths().sum() == total


def test_a_downsampled_pack_brings_other_rows_each_epoch_and_an_upsampled_one_repeats(
        packs: dict[str, Path]) -> None:
    mixture = PackMixture([{"path": packs["chat"], "weight": 1}, {"path": packs["code"], "weight": 3}])
    chat, code = mixture.packs

    def rows_of(pack: int, epoch: int) -> list[int]:
        mixture.set_epoch(epoch)
        return [mixture.locate(i)[1] for i in range(len(mixture)) if mixture.locate(i)[0] == pack]

    assert chat.rows_per_epoch < len(chat.dataset) and code.rows_per_epoch > len(code.dataset)
    assert set(rows_of(0, 0)) != set(rows_of(0, 1)), "a downsampled pack's subset changes with the epoch"
    repeats = Counter(rows_of(1, 0))
    assert set(repeats) == set(range(len(code.dataset))), "an upsampled pack is seen whole first"
    assert max(repeats.values()) - min(repeats.values()) <= 1
    again = PackMixture([{"path": packs["chat"], "weight": 1}, {"path": packs["code"], "weight": 3}])
    again.set_epoch(1)
    mixture.set_epoch(1)
    assert [again.locate(i) for i in range(len(again))] == [mixture.locate(i) for i in range(len(mixture))], \
        "the same seed and epoch, the same rows"


def batches(loader: PackLoader, count: int) -> list[dict[str, Any]]:
    taken = []
    for batch in loader:
        taken.append(batch)
        if len(taken) == count:
            break
    return taken


def test_a_mixture_resumes_exactly_mid_epoch(packs: dict[str, Path]) -> None:
    def loader() -> PackLoader:
        mixture = PackMixture([{"path": packs["chat"], "weight": 2, "name": "chat"},
                               {"path": packs["code"], "weight": 1, "name": "code"}], seed=3)
        return PackLoader(mixture, max_tokens=512, collate=lambda rows: collate_padding_free(rows, "np"), seed=3,
                          rank=0, world_size=1)

    whole = loader()
    whole.set_epoch(1)
    expected = batches(whole, 12)
    first = loader()
    first.set_epoch(1)
    batches(first, 5)
    resumed = loader()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for got, want in zip(batches(resumed, 7), expected[5:], strict=True):
        assert np.array_equal(got["input_ids"], want["input_ids"])
        assert np.array_equal(got["pack_ids"], want["pack_ids"])
    assert set(np.unique(expected[0]["pack_ids"])) <= {0, 1}
    assert expected[0]["pack_ids"].shape == expected[0]["labels"].shape


def test_packs_of_another_template_or_bad_weights_are_refused(packs: dict[str, Path], tmp_path: Path) -> None:
    data = write_lines(tmp_path / "x.jsonl", conversations("other", 40))
    preprocess([data], DEMO, tmp_path / "other", max_length=128, template="qwen_chat")
    with pytest.raises(ConfigError, match="another template"):
        PackMixture([packs["chat"], tmp_path / "other"])
    with pytest.raises(ConfigError, match="weight must be a positive number"):
        PackMixture([{"path": packs["chat"], "weight": 0}])
    with pytest.raises(ConfigError, match="distinct names"):
        PackMixture([packs["chat"], {"path": packs["chat"], "weight": 2}])


def test_training_on_a_mixture_logs_the_loss_of_each_pack(tiny_setup: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from sftpack.train import load_config, train

    other = tmp_path / "math"
    write_lines(tmp_path / "math.jsonl", conversations("math", 200))
    preprocess([tmp_path / "math.jsonl"], tiny_setup["base"], other, max_length=256)
    raw = {"model": {"path": str(tiny_setup["base"]), "attention": "sdpa"}, "method": {"name": "full"},
           "data": {"packs": [{"path": str(tiny_setup["pack"]), "weight": 3, "name": "chat"},
                              {"path": str(other), "weight": 1, "name": "math"}], "batch_size": 4},
           "optim": {"lr": 3e-3, "max_steps": 6, "scheduler": "constant"}, "output": {"dir": str(tmp_path / "run")}}
    train(load_config(raw=raw))
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "loss" in s]
    assert len(steps) == 6
    assert any("loss/chat" in s for s in steps) and any("loss/math" in s for s in steps)
    both = [s for s in steps if "loss/chat" in s and "loss/math" in s]
    assert both, "some step mixes both packs"
    for step in both:
        assert min(step["loss/chat"], step["loss/math"]) - 1e-4 <= step["loss"] <= max(
            step["loss/chat"], step["loss/math"]) + 1e-4, "the step loss is the packs' token-weighted mean"


def test_a_recipe_names_one_pack_or_a_list_of_packs(tiny_setup: dict[str, Path]) -> None:
    from sftpack.train import load_config

    base = {"model": {"path": str(tiny_setup["base"])}, "output": {"dir": "o"}}
    with pytest.raises(ConfigError, match="exactly one of pack"):
        load_config(raw={**base, "data": {"pack": "p", "packs": [{"path": "q"}], "batch_size": 1}})
    with pytest.raises(ConfigError, match=r"data.packs\[0\].weight"):
        load_config(raw={**base, "data": {"packs": [{"path": "q", "weight": -1}], "batch_size": 1}})
    packs = [{"path": str(tiny_setup["pack"]), "weight": 2}]
    assert load_config(raw={**base, "data": {"packs": packs, "batch_size": 1}}).data.packs


@pytest.mark.parametrize("chunk_tokens", [0, 7])
def test_the_loss_by_pack_adds_up_to_the_summed_loss(tiny_setup: dict[str, Path], chunk_tokens: int) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from sftpack.data import sum_token_loss
    from sftpack.train.loss import TokenLoss

    model = AutoModelForCausalLM.from_pretrained(tiny_setup["base"])
    mixture = PackMixture([tiny_setup["pack"]])
    rows = [mixture[i] for i in range(3)]
    for row, pack in zip(rows, (0, 1, 0), strict=True):
        row["pack"] = pack
    batch = collate_padding_free(rows, "pt")
    labels, pack_ids = batch.pop("labels"), batch.pop("pack_ids")
    with torch.no_grad():
        expected = sum_token_loss(model(**batch).logits, labels)
        loss = TokenLoss(model, chunk_tokens, packs=2)
        total = loss(labels=labels, pack_ids=pack_ids, **batch)
    assert loss.by_pack is not None
    sums, counts = loss.by_pack
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    assert float(sums.sum()) == pytest.approx(float(expected), rel=1e-5)
    trained = labels[..., 1:] != -100
    assert counts.tolist() == [int((trained & (pack_ids[..., 1:] == p)).sum()) for p in (0, 1)]

"""The pack loader: rows as training needs them, collate shapes, sharding and exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sftpack import PackDataset, PackLoader, PackSampler
from sftpack.data import (
    PackFormatError,
    block_diagonal_causal_mask,
    collate_padded,
    collate_padding_free,
    count_trained_tokens,
)
from sftpack.preprocess import preprocess

from .conftest import DEMO, write_lines


def conversation(i: int) -> str:
    turns = [{"role": "user", "content": f"What is {i} times {i}?"},
             {"role": "assistant", "content": f"{i} times {i} is {i * i}." + " Sure." * (i % 13)}]
    return json.dumps({"messages": turns})


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pack")
    data = write_lines(root / "data.jsonl", [conversation(i) for i in range(400)])
    preprocess([data], DEMO, root / "pack", max_length=256, window=150, shard_size_mb=1)
    return root / "pack"


def test_rows_have_labels_positions_and_boundaries(pack: Path) -> None:
    ds = PackDataset(pack, verify=True)
    assert len(ds) == json.loads((pack / "manifest.json").read_text())["counts"]["rows"]
    for i in range(len(ds)):
        row = ds[i]
        cu = row["cu_seqlens"]
        assert row["input_ids"].dtype == np.int32 and not row["input_ids"].flags.owndata  # a view
        assert len(row["labels"]) == len(row["input_ids"]) == len(row["position_ids"]) == cu[-1]
        for start, end in zip(cu[:-1], cu[1:], strict=True):
            assert row["labels"][start] == -100  # no prediction across documents
            assert list(row["position_ids"][start:end]) == list(range(end - start))
        trained = row["labels"] != -100
        assert np.array_equal(row["labels"][trained], row["input_ids"][trained])


def test_sources_point_back_to_input_lines(pack: Path) -> None:
    ds = PackDataset(pack)
    lines = sorted(line for i in range(len(ds)) for _, line in ds.sources(i))
    assert lines == list(range(1, 401))


def test_damaged_or_unfinished_packs_are_refused(pack: Path, tmp_path: Path) -> None:
    with pytest.raises(PackFormatError, match="no manifest.json"):
        PackDataset(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in pack.iterdir():
        copy.joinpath(f.name).write_bytes(f.read_bytes())
    shard = sorted(copy.glob("shard-*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PackFormatError, match="sha256"):
        PackDataset(copy, verify=True)
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(PackFormatError, match="bytes"):
        PackDataset(copy)


def test_padding_free_collate_flattens_with_varlen_keywords(pack: Path) -> None:
    ds = PackDataset(pack)
    rows = [ds[0], ds[1]]
    batch = collate_padding_free(rows, return_tensors="np")
    total = sum(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, total)
    docs = np.concatenate([np.diff(r["cu_seqlens"]) for r in rows])
    assert list(batch["cu_seq_lens_q"]) == [0, *np.cumsum(docs)]
    assert batch["max_length_q"] == batch["max_length_k"] == docs.max()
    assert all(batch["labels"][0, s] == -100 for s in batch["cu_seq_lens_q"][:-1])


def test_padded_collate_masks_across_documents_by_default(pack: Path) -> None:
    ds = PackDataset(pack)
    rows = [ds[0], ds[len(ds) - 1]]
    batch = collate_padded(rows, pad_token_id=0, pad_to_multiple_of=8, return_tensors="np")
    length = batch["input_ids"].shape[1]
    assert length % 8 == 0 and length >= max(len(r["input_ids"]) for r in rows)
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, length, length)
    expected = block_diagonal_causal_mask([r["cu_seqlens"] for r in rows], length)
    assert (mask == expected).all(), "documents packed into one row never see each other"
    assert (batch["labels"][~mask[:, 0].any(axis=-1)] == -100).all(), "padding is never trained"
    plain = collate_padded(rows, pad_to_multiple_of=8, document_mask=False, return_tensors="np")["attention_mask"]
    assert plain.shape == (2, length) and (batch["labels"][plain == 0] == -100).all()


def test_block_diagonal_mask_is_causal_within_documents() -> None:
    mask = block_diagonal_causal_mask([np.array([0, 2, 5])], 6)[0, 0]
    assert mask[1, 0] and not mask[0, 1]  # causal
    assert not mask[2, 1] and mask[4, 2]  # second document cannot see the first
    assert not mask[5].any()  # padding attends to nothing


def test_ranks_cover_every_row_once_per_epoch_with_equal_steps() -> None:
    for rows, world in ((103, 4), (100, 2), (7, 3)):
        per_rank = [PackSampler(rows, seed=3, rank=r, world_size=world).indices(epoch=1) for r in range(world)]
        seen = np.concatenate(per_rank)
        assert len(set(seen)) == len(seen) == rows - rows % world  # drop_last leaves < world out
        assert len({len(p) for p in per_rank}) == 1
        wrapped = [PackSampler(rows, seed=3, rank=r, world_size=world, drop_last=False).indices(1)
                   for r in range(world)]
        assert set(np.concatenate(wrapped)) == set(range(rows))
    first, second = PackSampler(50, seed=1).indices(0), PackSampler(50, seed=1).indices(1)
    assert not np.array_equal(first, second)  # a new order every epoch


def batches_as_lists(loader: PackLoader) -> list[list[int]]:
    return [b["input_ids"][0].tolist() for b in loader]


@pytest.mark.parametrize("sizing", [{"batch_size": 3}, {"max_tokens": 600}])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(pack: Path, sizing: dict[str, Any]) -> None:
    ds = PackDataset(pack)
    whole = PackLoader(ds, seed=7, collate=lambda rows: collate_padding_free(rows, "np"), **sizing)
    whole.set_epoch(2)
    expected = batches_as_lists(whole)
    first = PackLoader(ds, seed=7, collate=lambda rows: collate_padding_free(rows, "np"), **sizing)
    first.set_epoch(2)
    taken = []
    for batch in first:
        taken.append(batch["input_ids"][0].tolist())
        if len(taken) == 3:
            break
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
    resumed = PackLoader(ds, seed=7, collate=lambda rows: collate_padding_free(rows, "np"), **sizing)
    resumed.load_state_dict(state)
    assert taken + batches_as_lists(resumed) == expected


def test_token_budget_batches_respect_the_budget_and_align_ranks(pack: Path) -> None:
    ds = PackDataset(pack)
    loaders = [PackLoader(ds, max_tokens=600, rank=r, world_size=2, collate=lambda b: collate_padding_free(b, "np"))
               for r in range(2)]
    counts = [len(loader) for loader in loaders]
    assert counts[0] == counts[1] > 0
    for batch in loaders[0]:
        assert batch["input_ids"].shape[1] <= max(600, int(ds.lengths().max()))


def test_resume_refuses_another_setup(pack: Path) -> None:
    ds = PackDataset(pack)
    state = PackLoader(ds, batch_size=2, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        PackLoader(ds, batch_size=2, seed=2).load_state_dict(state)


def test_trained_token_count_uses_the_causal_shift() -> None:
    labels = np.array([[-100, 5, 6, -100, 7]])
    assert count_trained_tokens(labels) == 3

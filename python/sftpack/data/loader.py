"""PackLoader: batches for a training loop, with exact resume.

It runs in the training process (collating packed rows is a few numpy copies, no worker
processes needed) and counts the batches it has handed out, so ``state_dict()`` is exactly
where training stands: ``load_state_dict()`` resumes mid-epoch without replaying batches.

Batches hold ``batch_size`` rows, or as many rows as fit in ``max_tokens``. Token-budget batches
are formed per rank and every rank then stops at the smallest count, so all ranks take the
same number of steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .collate import collate_padded, collate_padding_free
from .mixture import PackMixture
from .pack import PackDataset
from .sampler import PackSampler

COLLATES: dict[str, Callable[[list[dict[str, np.ndarray]]], Any]] = {
    "padding_free": collate_padding_free,
    "padded": collate_padded,
}


def _token_budget_groups(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    groups, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        if used + n > max_tokens and i > start:
            groups.append(np.arange(start, i))
            start, used = i, 0
        used += int(n)
    if start < len(lengths):
        groups.append(np.arange(start, len(lengths)))
    return groups


class PackLoader:
    """Iterates over batches of a :class:`PackDataset` for one epoch at a time.

    Args:
        dataset: the pack, or a :class:`~sftpack.data.mixture.PackMixture` of several.
        batch_size: rows per batch (or give ``max_tokens``).
        max_tokens: token budget per batch (padding-free tokens).
        collate: "padding_free", "padded", or a callable taking a list of rows.
        seed, shuffle, rank, world_size, drop_last: see :class:`PackSampler`.
    """

    def __init__(
        self,
        dataset: PackDataset | PackMixture,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        collate: str | Callable[[list[dict[str, np.ndarray]]], Any] = "padding_free",
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
    ) -> None:
        if (batch_size is None) == (max_tokens is None):
            raise ValueError("give exactly one of batch_size or max_tokens")
        self.dataset = dataset
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.collate: Callable[[list[dict[str, np.ndarray]]], Any]
        if callable(collate):
            self.collate = collate
        elif collate in COLLATES:
            self.collate = COLLATES[collate]
        else:
            raise ValueError(f"unknown collate {collate!r}: use 'padding_free', 'padded' or a function")
        self.drop_last = drop_last
        self.sampler = PackSampler(len(dataset), seed, shuffle, rank, world_size, drop_last)
        self.epoch = 0
        self.batches_done = 0

    def _batches(self, epoch: int) -> list[np.ndarray]:
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:  # a PackMixture draws other rows each epoch
            set_epoch(epoch)
        if self.batch_size is not None:
            rows = self.sampler.indices(epoch)
            count = len(rows) // self.batch_size if self.drop_last else -(-len(rows) // self.batch_size)
            return [rows[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]
        assert self.max_tokens is not None
        lengths = self.dataset.lengths()
        per_rank = []
        for rank in range(self.sampler.world_size):
            sampler = PackSampler(len(self.dataset), self.sampler.seed, self.sampler.shuffle, rank,
                                  self.sampler.world_size, self.drop_last)
            rows = sampler.indices(epoch)
            per_rank.append([rows[g] for g in _token_budget_groups(lengths[rows], self.max_tokens)])
        steps = min(len(b) for b in per_rank)
        return per_rank[self.sampler.rank][:steps]

    def __len__(self) -> int:
        return len(self._batches(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches_done = 0

    def __iter__(self) -> Iterator[Any]:
        for rows in self._batches(self.epoch)[self.batches_done :]:
            self.batches_done += 1
            yield self.collate([self.dataset[int(i)] for i in rows])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "sampler": self.sampler.state_dict(),
                "batch_size": self.batch_size, "max_tokens": self.max_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["batch_size"], state["max_tokens"]) != (self.batch_size, self.max_tokens):
            raise ValueError("cannot resume: the saved batch_size/max_tokens differ from this loader's")
        self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self.batches_done = int(state["batches_done"])


def evaluation_batches(dataset: PackDataset, batch_size: int | None = None, max_tokens: int | None = None,
                       rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """This rank's row indices for one pass over an evaluation pack: every row exactly once over
    all ranks, in order (rank r takes rows r, r+w, ...), grouped by ``batch_size`` rows or
    ``max_tokens`` tokens. Every rank gets the same number of batches, as forward passes under
    ZeRO-3 or DDP are collective: a rank that runs out gets empty batches (no rows).
    """
    if (batch_size is None) == (max_tokens is None):
        raise ValueError("give exactly one of batch_size or max_tokens")
    per_rank = []
    for r in range(world_size):
        rows = np.arange(r, len(dataset), world_size)
        if batch_size is not None:
            per_rank.append([rows[i:i + batch_size] for i in range(0, len(rows), batch_size)])
        else:
            assert max_tokens is not None
            per_rank.append([rows[g] for g in _token_budget_groups(dataset.lengths()[rows], max_tokens)])
    steps = max(len(b) for b in per_rank)
    mine = per_rank[rank]
    return mine + [np.zeros(0, dtype=np.int64)] * (steps - len(mine))

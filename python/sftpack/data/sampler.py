"""Seeded, rank-sharded row order with O(1) resume.

Every epoch has its own permutation (from ``seed`` and the epoch number). Rank r of w takes rows
``perm[r::w]``. With ``drop_last=True`` (the default) the permutation is cut to a multiple of w,
so every rank gets the same number of rows and a few rows (fewer than w) sit out that epoch —
different ones each epoch. With ``drop_last=False`` the permutation wraps around instead, so a
few rows are seen twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np


def distributed_rank_and_size() -> tuple[int, int]:
    """From torch.distributed when initialized, else RANK / WORLD_SIZE (torchrun, deepspeed)."""
    try:
        import torch.distributed as dist  # noqa: PLC0415

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class PackSampler:
    """Yields this rank's row indices for the current epoch; a ``torch.utils.data.Sampler``
    in all but name (pass it as ``sampler=``)."""

    def __init__(
        self,
        num_rows: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
    ) -> None:
        default_rank, default_size = distributed_rank_and_size()
        self.num_rows = num_rows
        self.seed = seed
        self.shuffle = shuffle
        self.rank = default_rank if rank is None else rank
        self.world_size = default_size if world_size is None else world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if drop_last and num_rows < self.world_size:
            raise ValueError(f"{num_rows} rows cannot feed {self.world_size} ranks with drop_last=True")

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's rows, in order, for an epoch."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
        else:
            order = np.arange(self.num_rows)
        per_rank = self.num_rows // self.world_size if self.drop_last else -(-self.num_rows // self.world_size)
        total = per_rank * self.world_size
        order = order[:total] if self.drop_last else np.resize(order, total)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.indices())

    def set_epoch(self, epoch: int) -> None:
        """Starts an epoch from its beginning (the torch convention)."""
        self.epoch = epoch
        self.position = 0

    def __iter__(self) -> Iterator[int]:
        for index in self.indices()[self.position :]:
            self.position += 1
            yield int(index)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_rows": self.num_rows,
                "world_size": self.world_size, "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes where ``state`` was taken, in O(1). Refuses a state from another setup."""
        for key in ("seed", "num_rows", "world_size", "shuffle", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: the saved {key} is {state[key]!r}, this sampler has "
                                 f"{getattr(self, key)!r} (resume with the same pack and settings)")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])

"""Held-out evaluation: the loss on a validation pack, and when to stop.

The eval loss is normalized exactly as the training loss: the summed token loss of every row on
every rank, divided by the trained tokens of every row on every rank. Packing therefore does not
change it: a packed validation pack scores the same as each conversation scored on its own.

    rank 0: rows 0, 2, 4 ...   sum of token losses s0, trained tokens n0
    rank 1: rows 1, 3, 5 ...   s1, n1                  eval_loss = (s0 + s1) / (n0 + n1)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..data import IGNORE_INDEX, PackDataset, count_trained_tokens
from ..data.loader import evaluation_batches


@dataclass(frozen=True)
class EvalResult:
    loss: float
    tokens: int
    seconds: float


class Evaluator:
    """One pass over an evaluation pack on this rank; every rank runs the same number of forward
    passes (ranks out of rows score a row with nothing trained in it)."""

    def __init__(self, dataset: PackDataset, collate: Callable[[list[dict[str, np.ndarray]]], Any],
                 batch_size: int | None, max_tokens: int | None, rank: int, world: int, replicas: int = 1) -> None:
        """``rank`` and ``world`` over the data-parallel ranks; ``replicas``: ranks that see each
        batch (a sequence-parallel group, each scoring its share of the tokens)."""
        self.dataset = dataset
        self.collate = collate
        self.world = world * replicas
        self.replicas = replicas
        self.batches = evaluation_batches(dataset, batch_size, max_tokens, rank, world)

    def _batch(self, rows: np.ndarray) -> Any:
        if len(rows):
            return self.collate([self.dataset[int(i)] for i in rows])
        filler = dict(self.dataset[0])
        filler["labels"] = np.full_like(filler["labels"], IGNORE_INDEX)
        return self.collate([filler])

    def local_totals(self, forward_sum_loss: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        """[summed token loss, trained tokens] over this rank's rows."""
        totals = torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            for rows in self.batches:
                batch = self._batch(rows)
                totals[0] += float(forward_sum_loss(batch))
                totals[1] += count_trained_tokens(batch["labels"])
        return totals

    def run(self, forward_sum_loss: Callable[[Any], torch.Tensor]) -> EvalResult:
        """``forward_sum_loss(batch)``: the summed token loss of a batch, as training computes it."""
        started = time.monotonic()
        totals = self.local_totals(forward_sum_loss)
        if self.world > 1:
            torch.distributed.all_reduce(totals)
        totals[1] /= self.replicas  # every rank of a group counted the whole batch's tokens
        loss = float(totals[0] / totals[1]) if totals[1] > 0 else math.nan
        return EvalResult(loss=loss, tokens=int(totals[1]), seconds=time.monotonic() - started)


@dataclass
class EvalTracker:
    """The best eval loss so far, and early stopping: stop after ``patience`` evaluations in a
    row that did not improve on the best."""

    patience: int | None = None
    best: float = math.inf
    best_step: int = 0
    evals_without_improvement: int = 0

    def update(self, loss: float, step: int) -> bool:
        """Records an evaluation; True when it is the best so far."""
        if loss < self.best:
            self.best, self.best_step, self.evals_without_improvement = loss, step, 0
            return True
        self.evals_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evals_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_step = int(state["best_step"])
        self.evals_without_improvement = int(state["evals_without_improvement"])

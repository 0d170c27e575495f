"""A run's saved folders: ``checkpoint-N/`` (resumes exactly), ``best/`` and ``model/`` (Hugging
Face folders), each with the tokenizer files and the training record beside the weights.

The backend writes and reads the weights and optimizer state in its own layout
(train/backends/); this module decides the folders, writes the record, and resumes from the
newest complete checkpoint after checking it was made by the same schedule and data order
(train/resume.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..lifecycle import TOKENIZER_FILES
from ..record import TrainingRecord
from . import resume
from .backends import Backend


class Checkpoints:
    """The folders of one run in ``out``.

    Args:
        record: the training record of the run at a step, for a layout, with an eval loss.
        tokenizer: the folder whose tokenizer files go beside every saved model.
        rank, world: this process's place; rank 0 writes the shared files, all wait for it.
    """

    def __init__(self, out: Path, backend: Backend, record: Callable[[int, str, float | None], TrainingRecord],
                 tokenizer: Path, rank: int, world: int) -> None:
        self.out, self.backend, self.record = out, backend, record
        self.tokenizer, self.rank, self.world = tokenizer, rank, world

    def save(self, step: int, client_state: dict[str, Any] | None) -> Path:
        """``checkpoint-N`` with ``client_state`` (what resumes the loop), or ``model/`` at the end
        (``client_state`` None)."""
        final = client_state is None
        target = self.out / ("model" if final else f"checkpoint-{step}")
        if client_state is None:
            self.backend.save_model(target)
        else:
            self.backend.save_checkpoint(target, client_state)
        self._finish(target, step, "huggingface" if final else self.backend.checkpoint_format, None)
        return target

    def save_best(self, step: int, eval_loss: float) -> Path:
        """``best/``, replaced whole: an interrupted save never leaves half a folder."""
        target, staging = self.out / "best", self.out / "best.tmp"
        if self.rank == 0 and staging.exists():
            shutil.rmtree(staging)
        self.backend.save_model(staging)
        self._finish(staging, step, "huggingface", eval_loss)
        if self.rank == 0:
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        self._wait()
        return target

    def latest(self) -> Path | None:
        """The newest checkpoint the backend can resume from (complete ones only)."""
        found = sorted(self.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        found = [c for c in found if self.backend.has_checkpoint(c)]
        return found[-1] if found else None

    def restore(self, checkpoint: Path, current: dict[str, Any], allow_changes: bool) -> dict[str, Any]:
        """Loads a checkpoint into the backend after checking its record against ``current``
        (see :func:`resume.check`); returns the loop's state saved with it."""
        record = TrainingRecord.read(checkpoint)
        if record is not None:
            changed = resume.check(record.as_dict(), current, str(checkpoint), allow_changes)
            if changed and self.rank == 0:
                print(f"note: resuming from {checkpoint} although the recipe changed (output.allow_resume_changes): "
                      + "; ".join(changed), flush=True)
        state = self.backend.load_checkpoint(checkpoint)
        if self.rank == 0:
            print(f"resuming from {checkpoint} (step {state['step']})", flush=True)
        return state

    def _finish(self, target: Path, step: int, layout: str, eval_loss: float | None) -> None:
        if self.rank == 0:
            for name in TOKENIZER_FILES:
                if (self.tokenizer / name).is_file():
                    shutil.copy(self.tokenizer / name, target / name)
            self.record(step, layout, eval_loss).write(target)
        if eval_loss is None:
            self._wait()

    def _wait(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

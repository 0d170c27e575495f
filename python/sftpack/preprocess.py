"""``sftpack preprocess`` as a function: one call into the Rust pipeline."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from . import _core
from .encoding import PathLike
from .errors import ConfigError
from .jobs import job_config
from .mapping import map_function

Progress = dict[str, Any]


def preprocess(
    inputs: Sequence[PathLike],
    tokenizer: PathLike,
    out: PathLike,
    *,
    pack: bool = True,
    seed: int = 0,
    window: int = 100_000,
    shard_size_mb: int = 512,
    overwrite: bool = False,
    progress: Callable[[Progress], object] | None = None,
    progress_interval_ms: int = 500,
    val_size: float | int | str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Reads, validates, templates, tokenizes, masks, packs and writes a dataset to ``out``.

    Args:
        inputs: files or directories (see ``sftpack check``).
        tokenizer: Hugging Face tokenizer directory.
        out: output directory: ``manifest.json``, ``shard-*.arrow``, ``rejects.jsonl``.
        pack: best-fit-decreasing packing into rows of ``max_length`` (False: one row per
            conversation, in input order).
        seed: shuffles the order of packed rows, deterministically.
        window: documents per packing window (memory grows with it).
        shard_size_mb: shards roll over at about this size.
        overwrite: replace an output made from other inputs or settings.
        progress: called every ``progress_interval_ms`` with records, tokens, bytes_read,
            bytes_total and rows; an exception raised there stops the run (it can be resumed).
        val_size: hold out a validation split in ``out/validation/``: a share of the records
            (0.05) or a number of them (500), chosen by ``seed``, the same for any thread count;
            a held-out record is never in the training pack.
        **options: template, format, max_length, overlong, threads, template_kwargs, and map_fn:
            a map function spec (see :mod:`sftpack.mapping`) that every record goes through first,
            inside the engine's streaming loop.

    Returns:
        ``{"status": "done" | "resumed" | "up to date", "out": ..., "manifest": {...}}``.
    """
    if pack and options.get("max_length") is None:
        raise ConfigError("packing needs max_length (the row length)\nhint: pass max_length=4096, or pack=False")
    mapper = map_function(options.pop("map_fn", None))
    config = {
        "job": json.loads(job_config(inputs, tokenizer, map_fn=mapper, **options)),
        "out": os.fspath(out),
        "pack": pack,
        "seed": seed,
        "window": window,
        "shard_bytes": shard_size_mb << 20,
        "overwrite": overwrite,
        "progress_interval_ms": progress_interval_ms,
        "validation": validation_size(val_size),
    }

    def report(text: str) -> None:
        if progress is not None:
            progress(json.loads(text))

    result: dict[str, Any] = json.loads(_core.preprocess(json.dumps(config), report, mapper))
    return result


def validation_size(value: float | int | str | None) -> dict[str, float | int] | None:
    """``val_size`` as the engine reads it: a share in (0, 1) or a whole number of records >= 1."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if 0 < number < 1:
        return {"fraction": number}
    if number >= 1 and number.is_integer():
        return {"documents": int(number)}
    raise ConfigError(f"val_size {value!r} is neither a share between 0 and 1 nor a whole number of records\n"
                      "hint: --val-size 0.05 holds out 5% of the records, --val-size 500 holds out 500")

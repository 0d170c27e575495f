"""``sftpack preprocess`` as a function: one call into the Rust pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from . import _core
from .mapping import map_function
from .settings import PathLike, PreprocessSettings, preprocess_settings

Progress = dict[str, Any]


def preprocess(
    inputs: Sequence[PathLike],
    tokenizer: PathLike,
    out: PathLike,
    *,
    progress: Callable[[Progress], object] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Reads, validates, templates, tokenizes, masks, packs and writes a dataset to ``out``.

    Args:
        inputs: files or directories (see ``sftpack check``).
        tokenizer: Hugging Face tokenizer directory.
        out: output directory: ``manifest.json``, ``shard-*.arrow``, ``rejects.jsonl``.
        progress: called every ``progress_interval_ms`` with records, tokens, bytes_read,
            bytes_total and rows; an exception raised there stops the run (it can be resumed).
        **options: the settings of :mod:`sftpack.settings`, every problem reported at once:

            - max_length: the row length (needed for packing); overlong: drop | truncate | error;
            - template, format, template_kwargs, threads;
            - map_fn: a map function spec (see :mod:`sftpack.mapping`) that every record goes
              through first, inside the engine's streaming loop;
            - pack (default True): best-fit-decreasing packing into rows of max_length (False:
              one row per conversation, in input order); seed: the packed row order and the
              validation split; window: documents per packing window (memory grows with it);
              shard_size_mb: shards roll over at about this size; overwrite: replace an output
              made from other inputs or settings;
            - val_size: hold out a validation split in ``out/validation/``: a share of the
              records (0.05) or a number of them (500), chosen by ``seed``, the same for any
              thread count; a held-out record is never in the training pack;
            - num_shards, shard_index: prepare only part ``shard_index`` of ``num_shards``: the
              work units (byte ranges, row groups, whole files) in that share of the input
              bytes, read only by this part; :func:`sftpack.parts.merge_packs` joins the parts
              into one pack;
            - engine: "local" (default) or "ray": the same job on Ray actors
              (:mod:`sftpack.ray_engine`), with ray_address (default: a local Ray instance),
              ray_actors (default: the cluster's CPUs / ray_cpus_per_actor), ray_cpus_per_actor
              (engine threads per actor, default 1) and ray_parts (default: one per actor).

    Returns:
        ``{"status": "done" | "resumed" | "up to date", "out": ..., "manifest": {...}}``.

    Raises:
        ConfigError: the settings are invalid (every problem listed).
    """
    return run_preprocess(preprocess_settings(inputs, tokenizer, out, **options), progress)


def run_preprocess(settings: PreprocessSettings, progress: Callable[[Progress], object] | None = None
                   ) -> dict[str, Any]:
    """Runs validated settings (see :func:`preprocess`)."""
    if settings.engine == "ray":
        from .ray_engine import preprocess_on_ray  # noqa: PLC0415 (Ray is an optional extra)

        return preprocess_on_ray(settings, progress)
    mapper = map_function(settings.job.map_fn)
    config = settings.to_engine(mapper.identity if mapper else None)

    def report(text: str) -> None:
        if progress is not None:
            progress(json.loads(text))

    result: dict[str, Any] = json.loads(_core.preprocess(json.dumps(config), report, mapper))
    return result

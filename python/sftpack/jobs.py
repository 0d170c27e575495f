"""Dataset-level jobs, each one call into the Rust engine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from . import _core
from .mapping import MapFunction, map_function
from .settings import PathLike, job_settings

CheckReport = dict[str, Any]


def check(inputs: Sequence[PathLike], tokenizer: PathLike, **options: Any) -> CheckReport:
    """Validates and encodes every record; returns counts, problems by kind with examples,
    token length percentiles and the trained-token share. See ``sftpack check --help``; the
    options are those of :func:`sftpack.settings.job_settings`. ``map_fn`` maps records first
    (see :mod:`sftpack.mapping`)."""
    config, mapper = _engine_job(inputs, tokenizer, options)
    report: CheckReport = json.loads(_core.check(config, mapper))
    return report


def samples(inputs: Sequence[PathLike], tokenizer: PathLike, n: int, **options: Any) -> list[dict[str, Any]]:
    """The first ``n`` records encoded, as runs of (text, trained) for display."""
    config, mapper = _engine_job(inputs, tokenizer, options)
    out: list[dict[str, Any]] = json.loads(_core.samples(config, n, mapper))
    return out


def _engine_job(inputs: Sequence[PathLike], tokenizer: PathLike,
                options: dict[str, Any]) -> tuple[str, MapFunction | None]:
    """The validated job as the engine reads it, and its map function if any."""
    settings = job_settings(inputs, tokenizer, **options)
    mapper = map_function(settings.map_fn)
    return json.dumps(settings.to_engine(mapper.identity if mapper else None)), mapper

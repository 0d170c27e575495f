"""Dataset-level jobs, each one call into the Rust engine."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from . import _core
from .encoding import PathLike, job_settings
from .mapping import MapFunction, map_function

CheckReport = dict[str, Any]


def job_config(
    inputs: Sequence[PathLike],
    tokenizer: PathLike,
    template: str | None = None,
    format: str | None = None,
    max_length: int | None = None,
    overlong: str = "drop",
    threads: int | None = None,
    template_kwargs: dict[str, Any] | None = None,
    map_fn: MapFunction | None = None,
) -> str:
    config = {
        "inputs": [os.fspath(p) for p in inputs],
        "format": format,
        "threads": threads,
        "map_fn": map_fn.identity if map_fn else None,
        **job_settings(tokenizer, template, max_length, overlong, template_kwargs),
    }
    return json.dumps(config)


def check(inputs: Sequence[PathLike], tokenizer: PathLike, **options: Any) -> CheckReport:
    """Validates and encodes every record; returns counts, problems by kind with examples,
    token length percentiles and the trained-token share. See ``sftpack check --help``.
    ``map_fn`` maps records first (see :mod:`sftpack.mapping`)."""
    mapper = map_function(options.pop("map_fn", None))
    report: CheckReport = json.loads(_core.check(job_config(inputs, tokenizer, map_fn=mapper, **options), mapper))
    return report


def samples(inputs: Sequence[PathLike], tokenizer: PathLike, n: int, **options: Any) -> list[dict[str, Any]]:
    """The first ``n`` records encoded, as runs of (text, trained) for display."""
    mapper = map_function(options.pop("map_fn", None))
    out: list[dict[str, Any]] = json.loads(_core.samples(job_config(inputs, tokenizer, map_fn=mapper, **options), n,
                                                         mapper))
    return out

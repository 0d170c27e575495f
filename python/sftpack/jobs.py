"""Dataset-level jobs, each one call into the Rust engine."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import _core
from .encoding import PathLike, job_settings

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
) -> str:
    config = {
        "inputs": [os.fspath(p) for p in inputs],
        "format": format,
        "threads": threads,
        **job_settings(tokenizer, template, max_length, overlong, template_kwargs),
    }
    return json.dumps(config)


def check(inputs: Sequence[PathLike], tokenizer: PathLike, **options: Any) -> CheckReport:
    """Validates and encodes every record; returns counts, problems by kind with examples,
    token length percentiles and the trained-token share. See ``sftpack check --help``.
    ``map_fn`` maps records first (see :mod:`sftpack.mapping`)."""
    with _mapped(inputs, options.pop("map_fn", None)) as files:
        report: CheckReport = json.loads(_core.check(job_config(files, tokenizer, **options)))
    return report


def samples(inputs: Sequence[PathLike], tokenizer: PathLike, n: int, **options: Any) -> list[dict[str, Any]]:
    """The first ``n`` records encoded, as runs of (text, trained) for display."""
    with _mapped(inputs, options.pop("map_fn", None)) as files:
        out: list[dict[str, Any]] = json.loads(_core.samples(job_config(files, tokenizer, **options), n))
    return out


@contextlib.contextmanager
def _mapped(inputs: Sequence[PathLike], map_fn: str | None) -> Iterator[Sequence[PathLike]]:
    if not map_fn:
        yield inputs
        return
    from .mapping import map_inputs  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="sftpack-mapped-") as work:
        yield map_inputs(inputs, map_fn, Path(work))

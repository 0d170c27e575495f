"""sftpack's exceptions. All derive from :class:`SftpackError`; I/O failures raise Python's own
``FileNotFoundError`` / ``PermissionError``."""

from __future__ import annotations

import json
from typing import Any

from ._core import ConfigError, InputError, RecordError, SftpackError, TemplateError, TokenizerError

__all__ = [
    "ConfigError",
    "InputError",
    "RecordError",
    "SftpackError",
    "TemplateError",
    "TokenizerError",
    "record_problems",
]


def record_problems(error: RecordError) -> list[dict[str, Any]]:
    """The problems of a :class:`RecordError`: dicts with kind, path, message and hint."""
    if len(error.args) > 1 and isinstance(error.args[1], str):
        problems: list[dict[str, Any]] = json.loads(error.args[1])
        return problems
    return []

"""sftpack's exceptions. All derive from :class:`SftpackError`, which carries what happened
(``message``: what, and where — file, line, JSON path) and how to fix it (``hint``) as separate
fields; ``str()`` gives both, as the command line prints them (``error:`` then ``hint:``). The
engine raises these same classes. I/O failures raise Python's own ``FileNotFoundError`` /
``PermissionError``."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ConfigError",
    "InputError",
    "OutputError",
    "RecordError",
    "SftpackError",
    "TemplateError",
    "TokenizerError",
    "record_problems",
]

HINT = "\nhint: "


class SftpackError(Exception):
    """Base class of sftpack's errors.

    Args:
        message: what happened, and where.
        hint: how to fix it; a message written as ``"...\\nhint: ..."`` is split into the two.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        if hint is None and HINT in message:
            message, hint = message.split(HINT, 1)
        super().__init__(message, hint)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}{HINT}{self.hint}"


class ConfigError(SftpackError):
    """A job's settings, a recipe or an output directory do not allow the run."""


class InputError(SftpackError):
    """An input cannot be read as a dataset, or a record stops the run (--overlong error)."""


class OutputError(SftpackError):
    """The output cannot be written."""


class TokenizerError(SftpackError):
    """The tokenizer cannot be loaded or used."""


class TemplateError(SftpackError):
    """The chat template cannot be compiled or used."""


class RecordError(SftpackError):
    """One record is invalid; ``problems`` says why, as data: dicts with ``kind`` (a stable
    slug), ``path`` (the JSON path at fault), ``message`` and ``hint``."""

    def __init__(self, message: str, problems: str | list[dict[str, Any]] = "[]") -> None:
        super().__init__(message)
        self.problems: list[dict[str, Any]] = json.loads(problems) if isinstance(problems, str) else list(problems)
        self.args = (message, self.problems)


def record_problems(error: RecordError) -> list[dict[str, Any]]:
    """The problems of a :class:`RecordError` (``error.problems``)."""
    return error.problems

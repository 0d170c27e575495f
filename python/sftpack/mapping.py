"""Map functions: a Python callable turning a record of any shape into one sftpack reads
(XTuner's ``dataset_map_fn``), run by the engine as a stage of its one streaming loop.

The engine reads and frames records, hands each batch's texts to :class:`MapFunction` (taking
the GIL for that one call), and parses, templates, tokenizes and packs what comes back in
parallel. A record keeps its own file:line throughout; a record the function raises on, returns
``None`` or a non-dict for, or that is not valid JSON becomes a ``map_fn_error`` reject with the
reason and the record as read, so the counts still reconcile. Nothing is written in between.

A spec names the function: ``module:function`` (importable), ``path/to/file.py:function``, or a
built-in name from :data:`BUILTIN` (formats of datasets XTuner ships map functions for). The
pack's key includes a hash of the function's source (its whole module file where there is one),
so an edited function makes a new pack and an unchanged one lets a re-run do nothing without
calling it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError

MapFn = Callable[[dict[str, Any]], Any]


def _openorca(r: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": "system", "content": r["system_prompt"]}] if r.get("system_prompt") else []
    return {"messages": [*messages, {"role": "user", "content": r["question"]},
                         {"role": "assistant", "content": r["response"]}]}


def _alpaca_zh(r: dict[str, Any]) -> dict[str, Any]:
    return {"instruction": r["instruction_zh"], "input": r.get("input_zh", ""), "output": r["output_zh"]}


def _prompt_completion(r: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}


def _query_response(r: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": r["query"]}, {"role": "assistant", "content": r["response"]}]}


BUILTIN: dict[str, MapFn] = {
    "openorca": _openorca,  # {system_prompt, question, response}
    "alpaca_zh": _alpaca_zh,  # {instruction_zh, input_zh, output_zh}
    "prompt_completion": _prompt_completion,  # {prompt, completion} (code_alpaca and others)
    "query_response": _query_response,  # {query, response}
}


def load_map_fn(spec: str) -> MapFn:
    """The callable a spec names (see the module docstring)."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    source, _, name = spec.rpartition(":")
    if not source or not name:
        raise ConfigError(f"map function {spec!r}: expected module:function, file.py:function or one of "
                          f"{sorted(BUILTIN)}")
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"map function {spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as error:
            raise ConfigError(f"map function {spec!r}: cannot import {source}: {error}") from error
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"map function {spec!r}: {source} has no function {name!r}")
    return function  # type: ignore[no-any-return]


def fingerprint(function: MapFn) -> str:
    """A hash of what the function is: the source of its module file (helpers it calls there
    included), else its own source. Functions without source (built in C, typed at a prompt) can
    only be named; a warning says the key then cannot see them change."""
    qualified = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', repr(function))}"
    try:
        file = inspect.getsourcefile(function)
        source = Path(file).read_bytes() if file and Path(file).is_file() else inspect.getsource(function).encode()
    except (OSError, TypeError):
        warnings.warn(f"map function {qualified}: its source cannot be read, so the pack key cannot tell when it "
                      "changes; use `overwrite: true` after changing it", stacklevel=3)
        source = b""
    return hashlib.sha256(qualified.encode() + b"\0" + source).hexdigest()


class MapFunction:
    """A map function as the engine calls it: a batch of record texts in, one
    ``(True, mapped_json)`` or ``(False, reason)`` out per text."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.function = load_map_fn(spec)
        self.identity = {"spec": spec, "fingerprint": fingerprint(self.function)}

    def __call__(self, texts: list[str]) -> list[tuple[bool, str]]:
        return [self.map_one(text) for text in texts]

    def map_one(self, text: str) -> tuple[bool, str]:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            return False, f"the record is not valid JSON: {error}"
        try:
            result = self.function(record)
        except Exception as error:  # noqa: BLE001 (any failure of user code rejects just this record)
            return False, f"{type(error).__name__}: {error}"
        if result is None:
            return False, "the map function returned None (skipped this record)"
        if not isinstance(result, dict):
            return False, f"the map function returned {type(result).__name__}, not a dict"
        try:
            return True, json.dumps(result, ensure_ascii=False)
        except (TypeError, ValueError) as error:
            return False, f"the map function returned a dict that is not JSON: {error}"


def map_function(spec: str | None) -> MapFunction | None:
    return MapFunction(spec) if spec else None

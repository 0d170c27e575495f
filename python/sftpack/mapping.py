"""Map functions: a Python callable turning a record of any shape into one sftpack reads
(XTuner's ``dataset_map_fn``), applied in a streaming pre-pass before the Rust engine.

The pre-pass reads one record at a time, calls the function, and writes one JSONL line per input
record, so memory stays flat and the engine counts every record: a record the function maps
becomes the mapped record plus ``sftpack_source`` (original file:line); a record it fails on
(an exception, or ``None`` returned) becomes a stand-in that the engine rejects as
``map_fn_error`` with the reason and the original record, so it lands in rejects.jsonl and the
counts still reconcile.

A spec names the function: ``module:function`` (importable), ``path/to/file.py:function``, or a
built-in name from :data:`BUILTIN` (formats of datasets XTuner ships map functions for).
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError

MapFn = Callable[[dict[str, Any]], Any]
MAP_ERROR_KEY = "sftpack_map_error"  # rust/src/schema/mod.rs reads it
SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")


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


def input_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files in the order the engine reads them: directories expanded to their dataset files."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)))
        else:
            files.append(item)
    return files


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8-sig")
    if path.name.endswith(".zst"):
        try:
            import zstandard  # noqa: PLC0415
        except ImportError as error:
            raise ConfigError(f"{path}: reading .zst in a map-function pre-pass needs zstandard\n"
                              "hint: pip install zstandard") from error
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(path.open("rb")), encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def iter_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, parsed record or the JSONDecodeError) for each record of a JSONL file, or of a JSON
    file holding an array or objects one after another, streamed."""
    with _open_text(path) as stream:
        if ".jsonl" in path.name:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as error:
                        yield number, error
        else:
            yield from _json_stream(stream.read(1 << 20), stream)


def _json_stream(buffer: str, stream: IO[str]) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    line, position, inside_array = 1, 0, False
    while True:
        while position < len(buffer) and (buffer[position].isspace() or buffer[position] in ",[]"):
            if buffer[position] == "\n":
                line += 1
            inside_array |= buffer[position] == "["
            position += 1
        if position >= len(buffer):
            more = stream.read(1 << 20)
            if not more:
                return
            buffer, position = buffer[position:] + more, 0
            continue
        try:
            record, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError as error:
            more = stream.read(1 << 20)
            if more:
                buffer, position = buffer[position:] + more, 0
                continue
            yield line, error
            return
        yield line, record
        line += buffer.count("\n", position, end)
        position = end


def map_file(path: Path, function: MapFn, target: Path) -> int:
    """Writes ``function`` applied to every record of ``path`` to ``target``; returns the count."""
    count = 0
    with target.open("w", encoding="utf-8") as out:
        for line, record in iter_records(path):
            source = f"{path}:{line}"
            out.write(json.dumps(_mapped(function, record, source), ensure_ascii=False) + "\n")
            count += 1
    return count


def _mapped(function: MapFn, record: Any, source: str) -> dict[str, Any]:
    if isinstance(record, json.JSONDecodeError):
        return {MAP_ERROR_KEY: f"invalid JSON: {record}", "sftpack_source": source}
    try:
        result = function(record)
    except Exception as error:  # noqa: BLE001 (any failure of user code rejects just this record)
        return {MAP_ERROR_KEY: f"{type(error).__name__}: {error}", "sftpack_source": source, "record": record}
    if result is None:
        return {MAP_ERROR_KEY: "the map function returned None (skipped this record)", "sftpack_source": source,
                "record": record}
    if not isinstance(result, dict):
        return {MAP_ERROR_KEY: f"the map function returned {type(result).__name__}, not a dict",
                "sftpack_source": source, "record": record}
    return {**result, "sftpack_source": source}


def map_inputs(inputs: Sequence[str | os.PathLike[str]], spec: str, work: Path) -> list[Path]:
    """Every input file mapped into ``work`` (one JSONL per file, in reading order)."""
    function = load_map_fn(spec)
    work.mkdir(parents=True, exist_ok=True)
    mapped = []
    for index, path in enumerate(input_files(inputs)):
        target = work / f"{index:04d}-{path.name.split('.')[0]}.jsonl"
        map_file(path, function, target)
        mapped.append(target)
    return mapped

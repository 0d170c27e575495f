"""PackDataset: a map-style dataset over an `sftpack-pack` directory.

Each item is one packed row::

    input_ids     [ d0 d0 d0 d0 | d1 d1 d1 | d2 d2 ]   int32, a view into the mapped shard
    labels        [-100 -100 5 6 |-100 8 9 |-100 4 ]   input id where trained, else -100
    position_ids  [ 0  1  2  3  | 0  1  2  | 0  1  ]   restart at every document
    cu_seqlens    [ 0, 4, 7, 9 ]                        int32, a view

The first token of every document is never trained, so no document is predicted from the one
before it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import SftpackError

IGNORE_INDEX = -100
FORMAT = "sftpack-pack"
SUPPORTED_VERSIONS = (1, 2)
COLUMNS = ("input_ids", "loss_mask", "cu_seqlens", "source_file", "source_line")


class PackFormatError(SftpackError, ValueError):
    """The directory is not a complete, readable sftpack pack."""


@dataclass(frozen=True)
class _Column:
    offsets: np.ndarray  # int32, len rows + 1, per batch
    values: np.ndarray


@dataclass(frozen=True)
class _Batch:
    first_row: int
    columns: dict[str, _Column]


def _list_column(array: pa.ListArray) -> _Column:
    offsets = np.asarray(array.offsets)
    values = array.values.to_numpy(zero_copy_only=True)
    return _Column(offsets=offsets, values=values)


class PackDataset:
    """Opens a pack directory written by ``sftpack preprocess``.

    Args:
        path: the pack directory (with manifest.json).
        verify: also check every shard's sha256 (reads all bytes once); sizes and row counts are
            always checked.

    Raises:
        PackFormatError: the directory is not a complete pack of a supported version.
    """

    def __init__(self, path: str | os.PathLike[str], verify: bool = False) -> None:
        self.path = Path(path)
        self.manifest = self._read_manifest()
        self._batches: list[_Batch] = []
        self._mmaps: list[pa.MemoryMappedFile] = []
        rows = 0
        for shard in self.manifest["shards"]:
            rows = self._open_shard(shard, rows, verify)
        self._starts = np.array([b.first_row for b in self._batches], dtype=np.int64)
        self._len = rows
        self._lengths: np.ndarray | None = None

    def _read_manifest(self) -> dict[str, Any]:
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            hint = " (a run is in progress or was interrupted: run the same preprocess command again)" if (
                self.path / "progress.json").exists() else ""
            raise PackFormatError(f"{self.path} has no manifest.json: it is not a finished sftpack pack{hint}")
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT or manifest.get("format_version") not in SUPPORTED_VERSIONS:
            raise PackFormatError(
                f"{manifest_path}: format {manifest.get('format')!r} v{manifest.get('format_version')} is not "
                f"{FORMAT} v{SUPPORTED_VERSIONS}; re-run sftpack preprocess with this sftpack version")
        return manifest

    def _open_shard(self, shard: dict[str, Any], first_row: int, verify: bool) -> int:
        file = self.path / shard["file"]
        if not file.is_file():
            raise PackFormatError(f"{file} is listed in the manifest but missing")
        if file.stat().st_size != shard["bytes"]:
            raise PackFormatError(f"{file} has {file.stat().st_size} bytes, the manifest says {shard['bytes']}")
        if verify:
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != shard["sha256"]:
                raise PackFormatError(f"{file}: sha256 differs from the manifest (the file is damaged)")
        mmap = pa.memory_map(str(file))
        self._mmaps.append(mmap)
        reader = pa.ipc.open_file(mmap)
        rows = first_row
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            columns = {name: _list_column(batch.column(name)) for name in COLUMNS}
            self._batches.append(_Batch(first_row=rows, columns=columns))
            rows += batch.num_rows
        if rows - first_row != shard["rows"]:
            raise PackFormatError(f"{file} has {rows - first_row} rows, the manifest says {shard['rows']}")
        return rows

    def __len__(self) -> int:
        return self._len

    @property
    def max_length(self) -> int | None:
        value = self.manifest.get("max_length")
        return int(value) if value is not None else None

    def _locate(self, index: int) -> tuple[_Batch, int]:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"row {index} is out of range for a pack of {self._len} rows")
        b = int(np.searchsorted(self._starts, index, side="right")) - 1
        batch = self._batches[b]
        return batch, index - batch.first_row

    def column(self, index: int, name: str) -> np.ndarray:
        """A zero-copy view of one column of one row."""
        batch, row = self._locate(index)
        column = batch.columns[name]
        return column.values[column.offsets[row]: column.offsets[row + 1]]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        input_ids = self.column(index, "input_ids")
        mask = self.column(index, "loss_mask")
        cu_seqlens = self.column(index, "cu_seqlens")
        labels = np.where(mask.astype(bool), input_ids, IGNORE_INDEX).astype(np.int64)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids(cu_seqlens),
            "cu_seqlens": cu_seqlens,
        }

    def lengths(self) -> np.ndarray:
        """Tokens per row (for token-budget batching)."""
        if self._lengths is None:
            parts = [np.diff(b.columns["input_ids"].offsets) for b in self._batches]
            self._lengths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return self._lengths

    def document_lengths(self) -> np.ndarray:
        """Tokens per document, over every row in order (from cu_seqlens, without a Python loop)."""
        parts = []
        for batch in self._batches:
            cu = batch.columns["cu_seqlens"]
            steps = np.diff(cu.values.astype(np.int64))
            # a step from one row's last boundary to the next row's 0 is not a document
            parts.append(np.delete(steps, cu.offsets[1:-1] - 1))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def sources(self, index: int) -> list[tuple[str, int | None]]:
        """(input file, line) of each document in a row. The line is None in a part of a
        partitioned run whose work unit starts at a line only the merge can number."""
        inputs = self.manifest["inputs"]
        units = self.manifest.get("units")
        files = self.column(index, "source_file")
        lines = self.column(index, "source_line")
        if units is None:
            return [(inputs[int(f)]["path"], int(n)) for f, n in zip(files, lines, strict=True)]
        sources: list[tuple[str, int | None]] = []
        for u, n in zip(files, lines, strict=True):
            unit = units[int(u)]
            first = unit.get("first_line")
            sources.append((inputs[unit["file"]]["path"], None if first is None else first - 1 + int(n)))
        return sources


def position_ids(cu_seqlens: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... restarting at every document boundary."""
    total = int(cu_seqlens[-1]) if len(cu_seqlens) else 0
    positions = np.arange(total, dtype=np.int64)
    starts = np.repeat(cu_seqlens[:-1].astype(np.int64), np.diff(cu_seqlens))
    return positions - starts

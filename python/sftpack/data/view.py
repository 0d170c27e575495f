"""Packs as people read them: rows decoded into their documents, each in runs of trained and
untrained text, and length histograms. `sftpack inspect PACK` and the studio show these.

A row of a pack, drawn::

    input_ids   [ d0 d0 d0 d0 | d1 d1 d1 | d2 d2 d2 d2 d2 ]
    cu_seqlens   0             4          7                12
    loss_mask   [ 0  0  1  1  | 0  1  1  | 0  0  0  1  1  ]
                  └ document 0 ┘└ doc 1 ─┘└── document 2 ──┘
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .pack import PackDataset


def document_runs(encoder: Any, ids: np.ndarray, mask: np.ndarray) -> list[tuple[str, bool]]:
    """A document decoded in runs of equal mask: (text, trained)."""
    cuts = [0, *(np.flatnonzero(np.diff(mask)) + 1).tolist(), len(ids)]
    return [(encoder.decode(ids[a:b].tolist()), bool(mask[a]))
            for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def row_documents(pack: PackDataset, index: int, encoder: Any) -> list[dict[str, Any]]:
    """The documents of row ``index``: source file and line, tokens, trained tokens, runs."""
    ids, mask, cu = (pack.column(index, name) for name in ("input_ids", "loss_mask", "cu_seqlens"))
    return [{"file": file, "line": line, "tokens": int(end - start), "trained": int(mask[start:end].sum()),
             "runs": document_runs(encoder, ids[start:end], mask[start:end])}
            for (file, line), start, end in zip(pack.sources(index), cu[:-1], cu[1:], strict=True)]


def histogram(lengths: np.ndarray, top: int, bins: int = 20) -> list[tuple[int, int, int]]:
    """(low, high, count) for up to ``bins`` equal bins over 1..``top`` tokens; lengths above
    ``top`` count in the last bin."""
    top = max(int(top), 1)
    bins = min(bins, top)
    width = -(-top // bins)
    bins = -(-top // width)
    index = np.minimum((np.asarray(lengths, dtype=np.int64) - 1) // width, bins - 1).clip(0)
    counts = np.bincount(index, minlength=bins)
    return [(i * width + 1, min((i + 1) * width, top), int(n)) for i, n in enumerate(counts)]


def pack_tokenizer(pack: PackDataset, override: str | Path | None = None) -> Path:
    """The tokenizer folder that decodes a pack: ``override``, else the one its manifest names."""
    if override:
        return Path(override)
    recorded = Path(pack.manifest["tokenizer"]["path"])
    folder = recorded.parent if recorded.name.startswith("tokenizer.json") else recorded
    if not folder.exists():
        raise ConfigError(f"{pack.path} was made with the tokenizer {folder}, which is not here",
                          "pass `tokenizer` (the same tokenizer folder) to decode its rows")
    return folder

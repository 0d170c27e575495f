"""Partitioned runs: a corpus prepared in parts anywhere (Slurm array tasks, Kubernetes jobs, Ray
actors), then joined into one pack without re-tokenizing anything.

``sftpack preprocess ... --num-shards N --shard-index I`` prepares part I: the inputs are cut
into work units that do not depend on N (JSON Lines byte ranges at record boundaries, Parquet row
groups, other files whole; see docs/scale.md) and part I reads only the units whose middle byte
falls in the I-th of N equal shares of the bytes, so N parts read the corpus about once.
``merge_packs`` joins the N parts; the engine does it on the typed manifests
(rust/src/preprocess/merge.rs):

    part-0/  manifest.json  shard-00000.arrow  rejects.jsonl  [validation/]
    part-1/  ...                                         ─┐
                                                          ├─> out/ manifest.json  shard-00000.arrow
                                                          │        shard-00001.arrow ... rejects.jsonl
    part-N-1/ ...                                        ─┘        [validation/]

The merged pack holds exactly the documents, ids and masks of one unpartitioned run (rows
differ: each part packs its own documents); shards are hard-linked (copied across file systems),
rejects concatenated in part order, counts summed. The manifest is written last, so an
interrupted merge is never taken for a pack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from . import _core
from .settings import PathLike


def merge_packs(parts: Sequence[PathLike], out: PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """Joins the packs of a partitioned run (every part, each once) into one pack at ``out``.

    Returns:
        ``{"status": "done" | "up to date", "out": ..., "manifest": {...}}``.

    Raises:
        ConfigError: a part is missing, unfinished, repeated, or of another job; or ``out`` holds
            another pack and ``overwrite`` is not set.
    """
    result: dict[str, Any] = json.loads(_core.merge_packs(json.dumps([os.fspath(p) for p in parts]),
                                                          os.fspath(out), overwrite))
    return result

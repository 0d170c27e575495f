"""Partitioned runs: a corpus prepared in parts anywhere (Slurm array tasks, Kubernetes jobs, Ray
actors), then joined into one pack without re-tokenizing anything.

``sftpack preprocess ... --num-shards N --shard-index I`` prepares part I: the records whose
position (in input order over all files) is I modulo N. Every part frames all records, which is
cheap, and maps, encodes and packs only its own. ``merge_packs`` joins the N parts:

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

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data.pack import FORMAT
from .errors import ConfigError
from .settings import PathLike

VALIDATION = "validation"
REJECTS = "rejects.jsonl"
# What every part of one job shares; anything else differing means the parts are of other jobs.
SHARED_FIELDS = ("format", "format_version", "sftpack_version", "engine_build", "inputs", "tokenizer", "template",
                 "max_length")


def read_part(path: Path) -> dict[str, Any]:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        hint = ("the part is still running or was interrupted: run its preprocess command again"
                if (path / "progress.json").exists() else "pass the --out directories of the parts' preprocess runs")
        raise ConfigError(f"{path} is not a finished pack (no manifest.json)\nhint: {hint}")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{manifest_path} is not an sftpack pack manifest")
    if not manifest["config"].get("partition"):
        raise ConfigError(f"{path} is a whole pack, not a part\n"
                          "hint: parts are made with sftpack preprocess --num-shards N --shard-index I")
    return manifest


def _settings_without_partition(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest["config"].items() if k != "partition"}


def check_parts(paths: Sequence[Path], manifests: Sequence[dict[str, Any]]) -> None:
    """The parts are all N parts of one job, each once."""
    first = manifests[0]
    for path, manifest in zip(paths, manifests, strict=True):
        differing = [f for f in SHARED_FIELDS if manifest.get(f) != first.get(f)]
        if _settings_without_partition(manifest) != _settings_without_partition(first):
            differing.append("config")
        if differing:
            raise ConfigError(f"{path} was made with other {', '.join(differing)} than {paths[0]}: "
                              "they are not parts of one job\n"
                              "hint: run every part with the same inputs, tokenizer, template and settings")
    count = first["config"]["partition"]["count"]
    seen: dict[int, Path] = {}
    for path, manifest in zip(paths, manifests, strict=True):
        partition = manifest["config"]["partition"]
        if partition["count"] != count:
            raise ConfigError(f"{path} is part {partition['index']} of {partition['count']}, "
                              f"{paths[0]} of {count}: the parts are of different partitionings")
        if partition["index"] in seen:
            raise ConfigError(f"{path} and {seen[partition['index']]} are both part {partition['index']} of {count}")
        seen[partition["index"]] = path
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise ConfigError(f"parts {missing} of {count} are missing\n"
                          f"hint: run sftpack preprocess --num-shards {count} --shard-index I for each, then merge "
                          "all of them")


def _sum_counts(counts: Sequence[dict[str, Any]], max_length: int | None) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for part in counts:
        for name, value in part.items():
            if name == "packing_efficiency":
                continue
            if isinstance(value, dict):
                bucket = total.setdefault(name, {})
                for kind, n in value.items():
                    bucket[kind] = bucket.get(kind, 0) + n
            else:
                total[name] = total.get(name, 0) + value
    rows = total.get("rows", 0)
    total["packing_efficiency"] = total["tokens"] / (rows * max_length) if max_length and rows else 1.0
    return total


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def _merge_split(dirs: Sequence[Path], manifests: Sequence[dict[str, Any]], out: Path, key: str,
                 merged_from: list[dict[str, Any]]) -> dict[str, Any]:
    """Joins one split (the training packs, or the validation packs) of every part into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    for part_dir, manifest in zip(dirs, manifests, strict=True):
        for shard in manifest["shards"]:
            name = f"shard-{len(shards):05d}.arrow"
            _link_or_copy(part_dir / shard["file"], out / name)
            shards.append({**shard, "file": name})
    with open(out / REJECTS, "wb") as rejects:
        for part_dir in dirs:
            if (part_dir / REJECTS).is_file():
                with open(part_dir / REJECTS, "rb") as part_rejects:
                    shutil.copyfileobj(part_rejects, rejects)
    first = manifests[0]
    merged = {**first, "key": key, "shards": shards,
              "config": _settings_without_partition(first),
              "counts": _sum_counts([m["counts"] for m in manifests], first.get("max_length")),
              "merged_from": merged_from}
    engines: list[dict[str, Any]] = [m["tokenizer_engine"] for m in manifests if m.get("tokenizer_engine")]
    if engines:
        merged["tokenizer_engine"] = {
            "engine": engines[0]["engine"], "note": engines[0]["note"],
            "texts_with_starts": sum(e["texts_with_starts"] for e in engines),
            "starts_from_old_engine": sum(e["starts_from_old_engine"] for e in engines)}
    return merged


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    temporary.replace(path)


def _clear_pack_dir(target: Path) -> None:
    """Removes an earlier pack's files from ``target``; refuses a folder holding anything else
    (a mistyped --out must not cost a user their files)."""
    if not target.exists():
        return
    pack_files = {"manifest.json", REJECTS, VALIDATION, "progress.json"}
    others = [p.name for p in target.iterdir()
              if p.name not in pack_files and not (p.name.startswith("shard-") and p.name.endswith(".arrow"))
              and not p.name.endswith(".tmp")]
    if others:
        raise ConfigError(f"{target} holds files that are not a pack's ({', '.join(sorted(others)[:5])})\n"
                          "hint: choose an empty or new `out` folder")
    for path in target.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def merge_packs(parts: Sequence[PathLike], out: PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """Joins the packs of a partitioned run (every part, each once) into one pack at ``out``.

    Returns:
        ``{"status": "done" | "up to date", "out": ..., "manifest": {...}}``.

    Raises:
        ConfigError: a part is missing, unfinished, repeated, or of another job; or ``out`` holds
            another pack and ``overwrite`` is not set.
    """
    if not parts:
        raise ConfigError("no parts to merge\nhint: sftpack pack merge PART... --out DIR")
    dirs = [Path(p) for p in parts]
    manifests = [read_part(d) for d in dirs]
    check_parts(dirs, manifests)
    order = sorted(range(len(dirs)), key=lambda i: manifests[i]["config"]["partition"]["index"])
    dirs, manifests = [dirs[i] for i in order], [manifests[i] for i in order]
    key = hashlib.sha256(json.dumps(["merge", [m["key"] for m in manifests]]).encode()).hexdigest()
    target = Path(out)
    existing = target / "manifest.json"
    if existing.is_file():
        if json.loads(existing.read_text()).get("key") == key:
            return {"status": "up to date", "out": str(target), "manifest": json.loads(existing.read_text())}
        if not overwrite:
            raise ConfigError(f"{target} holds another pack\nhint: choose another `out`, or use `overwrite: true`")
    _clear_pack_dir(target)
    merged_from = [{"path": str(d), "key": m["key"], "partition": m["config"]["partition"]}
                   for d, m in zip(dirs, manifests, strict=True)]
    manifest = _merge_split(dirs, manifests, target, key, merged_from)
    if manifests[0].get("validation"):
        held_out = [json.loads((d / VALIDATION / "manifest.json").read_text()) for d in dirs]
        validation = _merge_split([d / VALIDATION for d in dirs], held_out, target / VALIDATION, key, merged_from)
        _write_json(target / VALIDATION / "manifest.json", validation)
        counts = validation["counts"]
        manifest["validation"] = {**manifests[0]["validation"],
                                  "records": sum(m["validation"]["records"] for m in manifests),
                                  "documents": counts["packed"], "tokens": counts["tokens"], "rows": counts["rows"]}
    _write_json(target / "manifest.json", manifest)  # last: the pack is complete
    return {"status": "done", "out": str(target), "manifest": manifest}

"""Resume: a run continues from its latest checkpoint only under the settings that made it.

A checkpoint's training record (``sftpack_train.json``) holds the recipe, the keys of the packs
it read and the number of ranks that read batches. Resuming with another value of anything that
changes the schedule or the order of the data — the packs' contents and weights, batch size,
seeds, the learning-rate schedule (and the run's length, unless the rate is constant),
accumulation, the method, the data-parallel ranks — would go on
as a different run than the one checkpointed, silently; it is refused, naming each change,
unless ``output.allow_resume_changes`` accepts it (then the run says what changed).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

# Settings (dotted) whose change alters the schedule or the data order.
SCHEDULE_SETTINGS = ("data.batch_size", "data.max_tokens", "data.seed", "seed", "optim.lr", "optim.warmup_steps",
                     "optim.scheduler", "optim.grad_accum", "method", "distributed.sequence_parallel")
# The run's length: it shapes a decaying learning rate, not a constant one (training longer is a
# resume like any other).
LENGTH_SETTINGS = ("optim.max_steps", "optim.epochs")


_MISSING = object()


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for key in dotted.split("."):
        value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
    return value


def _pack_weights(config: dict[str, Any]) -> Any:
    packs = _lookup(config, "data.packs")
    return [(p.get("name"), p.get("weight", 1.0)) for p in packs] if isinstance(packs, list) else None


def changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's training record and this run's, in words."""
    found = []
    before, now = saved.get("config") or {}, current["config"]
    constant = _lookup(now, "optim.scheduler") == "constant" and _lookup(before, "optim.scheduler") == "constant"
    for name in SCHEDULE_SETTINGS + (() if constant else LENGTH_SETTINGS):
        old, new = _lookup(before, name), _lookup(now, name)
        if old is not _MISSING and old != new:  # a record older than a setting says nothing of it
            found.append(f"{name}: {old!r} -> {new!r}")
    if _pack_weights(before) != _pack_weights(now):
        found.append(f"data.packs weights: {_pack_weights(before)!r} -> {_pack_weights(now)!r}")
    if saved.get("pack_keys") and saved["pack_keys"] != current["pack_keys"]:
        found.append("the packs' contents (their keys differ: a pack was made again from other data or settings)")
    if saved.get("data_world") is not None and saved["data_world"] != current["data_world"]:
        found.append(f"ranks reading batches: {saved['data_world']} -> {current['data_world']}")
    return found


def check(saved: dict[str, Any], current: dict[str, Any], checkpoint: str, allow: bool) -> list[str]:
    """Refuses to resume across changes (see the module docs); returns them when allowed."""
    found = changes(saved, current)
    if found and not allow:
        listed = "\n  ".join(found)
        raise ConfigError(f"{checkpoint} was made by another recipe; resuming would not continue that run:\n  "
                          f"{listed}\nhint: restore those settings, use another output.dir to start afresh, or "
                          "set output.allow_resume_changes=true to resume anyway")
    return found

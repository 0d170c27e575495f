"""PackMixture: several packs as one dataset, each given a share of every epoch's tokens.

An epoch has as many tokens as all the packs hold together; pack p gets ``weight_p / sum(weights)``
of them. A pack with a larger share than its own size is repeated (upsampled), one with a
smaller share contributes a different subset every epoch (downsampled)::

    packs     chat (600k tokens, weight 0.25)     code (400k tokens, weight 0.75)
    epoch     250k tokens of chat (a subset)      750k tokens of code (all of it, then half again)

Rows are drawn per pack from that pack's own seeded permutations — one per pass over the pack,
from (seed, epoch, pack, pass) — so which rows an epoch holds depends on the seed and the epoch
only, and resuming needs only the epoch and the position (O(1)). Each row carries ``pack``: the
index of the pack it came from (``collate`` turns it into per-token ``pack_ids``).

All packs must share the tokenizer, and chat packs the template (raw-text packs, `format:
text`, have none and mix with any): rows of different vocabularies or chat
formats cannot train one model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..errors import ConfigError
from .pack import PackDataset

RAW_TEXT_TEMPLATE = "raw_text"  # the engine's name for a raw-text pack's (absent) template

PackSpec = Union[str, "os.PathLike[str]", PackDataset, dict[str, Any]]


@dataclass(frozen=True)
class MixedPack:
    name: str
    dataset: PackDataset
    weight: float
    rows_per_epoch: int


def _open(spec: PackSpec) -> tuple[PackDataset, float, str | None]:
    if isinstance(spec, dict):
        unknown = set(spec) - {"path", "weight", "name"}
        if unknown or "path" not in spec:
            raise ConfigError(f"a mixed pack is {{path, weight, name}}, found {spec!r}")
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigError(f"pack {spec['path']}: weight must be a positive number, found {weight!r}")
        return PackDataset(spec["path"]), float(weight), spec.get("name")
    dataset = spec if isinstance(spec, PackDataset) else PackDataset(spec)
    return dataset, 1.0, None


def is_raw_text(dataset: PackDataset) -> bool:
    """Whether a pack holds raw text (`format: text`), which has no chat template."""
    return bool(dataset.manifest["template"]["name"] == RAW_TEXT_TEMPLATE)


def _tokens(dataset: PackDataset) -> int:
    return int(dataset.lengths().sum())


class PackMixture:
    """Several packs mixed by token share (see the module docs).

    Args:
        packs: pack directories, :class:`PackDataset` objects, or ``{"path", "weight", "name"}``
            mappings (weight default 1; name default the directory name).
        seed: which rows a downsampled pack contributes, and in which order passes repeat.

    Raises:
        ConfigError: a weight is not positive, names repeat, or the packs were made with
            different tokenizers or templates.
    """

    def __init__(self, packs: Sequence[PackSpec], seed: int = 0) -> None:
        if not packs:
            raise ConfigError("a mixture needs at least one pack")
        opened = [_open(spec) for spec in packs]
        self._check_compatible([d for d, _, _ in opened])
        total_tokens = sum(_tokens(d) for d, _, _ in opened)
        total_weight = sum(w for _, w, _ in opened)
        mixed = []
        for dataset, weight, name in opened:
            rows = len(dataset)
            if rows == 0:
                raise ConfigError(f"pack {dataset.path} holds no rows")
            mean_row = _tokens(dataset) / rows
            share = weight / total_weight * total_tokens
            mixed.append(MixedPack(name or dataset.path.name, dataset, weight / total_weight,
                                   max(1, round(share / mean_row))))
        names = [m.name for m in mixed]
        if len(set(names)) != len(names):
            raise ConfigError(f"packs need distinct names, found {names}\nhint: give each a name")
        self.packs = mixed
        self.seed = seed
        self.epoch = 0
        self._starts = np.cumsum([0] + [m.rows_per_epoch for m in mixed])
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}
        self._lengths: np.ndarray | None = None  # of the current epoch

    @staticmethod
    def _check_compatible(datasets: Sequence[PackDataset]) -> None:
        first = datasets[0]
        for other in datasets[1:]:
            if other.manifest["tokenizer"]["sha256"] != first.manifest["tokenizer"]["sha256"]:
                raise ConfigError(f"pack {other.path} was made with another tokenizer than {first.path}\n"
                                  "hint: preprocess every mixed pack with the same --tokenizer")
        chat = [d for d in datasets if not is_raw_text(d)]
        for other in chat[1:]:
            if other.manifest["template"]["sha256"] != chat[0].manifest["template"]["sha256"]:
                raise ConfigError(f"pack {other.path} was made with another template than {chat[0].path}\n"
                                  "hint: preprocess every mixed chat pack with the same --template "
                                  "(raw-text packs mix with any)")

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest of the first chat pack (else the first pack): the tokenizer every pack
        shares and the chat template of every chat pack."""
        chat = [m.dataset for m in self.packs if not is_raw_text(m.dataset)]
        return (chat or [self.packs[0].dataset])[0].manifest

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.packs]

    @property
    def max_length(self) -> int | None:
        return self.packs[0].dataset.max_length

    def __len__(self) -> int:
        return int(self._starts[-1])

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._cache.clear()
            self._lengths = None

    def _pass_order(self, pack: int, repeat: int) -> np.ndarray:
        key = (self.epoch, pack, repeat)
        if key not in self._cache:
            rows = len(self.packs[pack].dataset)
            self._cache[key] = np.random.default_rng([self.seed, self.epoch, pack, repeat]).permutation(rows)
        return self._cache[key]

    def locate(self, index: int) -> tuple[int, int]:
        """(pack, row in that pack) of a row of the current epoch."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} is out of range for a mixture of {len(self)} rows")
        pack = int(np.searchsorted(self._starts, index, side="right")) - 1
        draw = index - int(self._starts[pack])
        repeat, position = divmod(draw, len(self.packs[pack].dataset))
        return pack, int(self._pass_order(pack, repeat)[position])

    def __getitem__(self, index: int) -> dict[str, Any]:
        pack, row = self.locate(index)
        item: dict[str, Any] = self.packs[pack].dataset[row]
        item["pack"] = pack
        return item

    def lengths(self) -> np.ndarray:
        """Tokens per row of the current epoch (for token-budget batching)."""
        if self._lengths is None:
            parts = []
            for p, mixed in enumerate(self.packs):
                rows = len(mixed.dataset)
                draws = np.arange(mixed.rows_per_epoch)
                order = np.concatenate([self._pass_order(p, r) for r in range(-(-mixed.rows_per_epoch // rows))])
                parts.append(mixed.dataset.lengths()[order[draws]])
            self._lengths = np.concatenate(parts)
        return self._lengths

    def pack_of(self, index: int) -> str:
        return self.packs[self.locate(index)[0]].name

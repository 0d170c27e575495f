"""The training record: ``sftpack_train.json`` beside every folder ``sftpack train`` saves
(``checkpoint-N/``, ``best/``, ``model/``), what chat, merge, convert, the studio and resume
need to use the folder as it was trained. One typed definition, written and read here only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

RECORD_FILE = "sftpack_train.json"


@dataclass
class TrainingRecord:
    """Every field has a default, so a record from an older sftpack (or written by hand) reads."""

    step: int = 0
    # The training pack's key (a mixture's first chat pack), and every pack's.
    pack_key: str = ""
    template: dict[str, Any] = field(default_factory=dict)  # name, source, sha256, as the pack recorded it
    config: dict[str, Any] = field(default_factory=dict)  # the recipe
    method: str = ""  # full | lora | qlora
    base_model: str = ""  # the model trained from (an adapter's base)
    format: str = "huggingface"  # or "deepspeed" for a ZeRO checkpoint-N
    template_kwargs: dict[str, Any] | None = None
    pack_keys: list[str] = field(default_factory=list)
    data_world: int | None = None  # ranks reading batches (data-parallel groups)
    eval_loss: float | None = None  # best/: its eval loss

    def write(self, folder: Path) -> Path:
        path = folder / RECORD_FILE
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        path.write_text(json.dumps(fields, indent=2))
        return path

    @classmethod
    def read(cls, folder: Path) -> TrainingRecord | None:
        """The folder's record, or None when it has none; a damaged one is an error naming it."""
        path = folder / RECORD_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{path} is not a training record of sftpack train: {error}\n"
                              "hint: it was edited or cut short; use the folder's model files without it") from None

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.config.get("model", {}).get("trust_remote_code", False))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

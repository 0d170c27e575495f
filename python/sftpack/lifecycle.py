"""After training: merge adapters, chat with the training template, and check templates."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def training_record(path: Path) -> dict[str, Any] | None:
    """What `sftpack train` saved beside a model or adapter (template, pack key, recipe)."""
    record = path / "sftpack_train.json"
    return json.loads(record.read_text()) if record.is_file() else None


def remote_code(*folders: Path | None) -> bool:
    """Whether the recipe that trained these folders ran the model's own code
    (model.trust_remote_code): loading them again needs the same."""
    for folder in folders:
        record = training_record(folder) if folder else None
        if record:
            return bool(record.get("config", {}).get("model", {}).get("trust_remote_code", False))
    return False


def merge(base: Path, adapter: Path, out: Path, max_shard_size: str = "5GB") -> Path:
    """Folds a LoRA adapter into its base model and writes a plain Hugging Face model (dtype of
    the base kept, sharded safetensors) that AutoModelForCausalLM loads."""
    from peft import PeftModel  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto", trust_remote_code=remote_code(adapter))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), max_shard_size=max_shard_size)
    for source in (adapter, base):
        for name in TOKENIZER_FILES:
            if (source / name).is_file() and not (out / name).exists():
                shutil.copy(source / name, out / name)
    if (adapter / "sftpack_train.json").is_file():
        shutil.copy(adapter / "sftpack_train.json", out / "sftpack_train.json")
    return out


class ChatSession:
    """A conversation with a model, rendered with the template it was trained with.

    Args:
        model: a Hugging Face model directory (full model, or the base when ``adapter`` is given).
        adapter: a LoRA adapter directory from ``sftpack train``.
        template: override the template saved with the checkpoint: "tokenizer", a built-in XTuner
            name, or a .jinja file. A template that differs from the training one gets a warning.
        system: a system message for every turn.
    """

    def __init__(self, model: Path, adapter: Path | None = None, template: str | None = None,
                 system: str | None = None) -> None:
        import torch  # noqa: PLC0415
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        self.torch = torch
        tokenizer_dir = adapter if adapter and (adapter / "tokenizer.json").is_file() else model
        trust = remote_code(adapter, model)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=trust)
        self.model: Any = AutoModelForCausalLM.from_pretrained(str(model), dtype="auto", trust_remote_code=trust)
        if adapter is not None:
            from peft import PeftModel  # noqa: PLC0415

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        self.model.eval()
        record = training_record(adapter or model)
        trained_with = record["template"] if record else None
        self.template = self._choose_template(template, trained_with)
        self.system = system
        self.history: list[dict[str, str]] = []

    def _choose_template(self, requested: str | None, trained_with: dict[str, Any] | None) -> dict[str, Any]:
        from . import _core  # noqa: PLC0415

        builtin = json.loads(_core.builtin_templates())
        if requested is None:
            return trained_with or {"name": "tokenizer", "source": self.tokenizer.chat_template}
        if requested in builtin:
            chosen = {"name": requested, "source": json.dumps({**builtin[requested], "name": requested})}
        elif requested == "tokenizer":
            chosen = {"name": "tokenizer", "source": self.tokenizer.chat_template}
        else:
            chosen = {"name": requested, "source": Path(requested).read_text()}
        if trained_with and chosen["source"] != trained_with["source"]:
            warnings.warn(f"the model was trained with template {trained_with['name']!r}, not {requested!r}: "
                          "replies may degrade", stacklevel=3)
        return chosen

    def _builtin(self) -> dict[str, Any] | None:
        try:
            fields: dict[str, Any] = json.loads(self.template["source"])
        except (json.JSONDecodeError, TypeError):
            return None
        return fields if isinstance(fields, dict) and "instruction" in fields else None

    def prompt_ids(self, user: str) -> list[int]:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        messages = [*messages, {"role": "user", "content": user}]
        xtuner = self._builtin()
        if xtuner is None:
            encoded: Any = self.tokenizer.apply_chat_template(
                messages, chat_template=self.template["source"], add_generation_prompt=True, return_dict=True)
            return list(encoded["input_ids"])
        return self._xtuner_prompt(xtuner, messages)

    def _xtuner_prompt(self, t: dict[str, Any], messages: list[dict[str, str]]) -> list[int]:
        text, turn, system = "", 0, ""
        bos = [] if str(self.tokenizer.__class__.__name__).startswith("Qwen") else [self.tokenizer.bos_token_id]
        for m in messages:
            if m["role"] == "system":
                system = m["content"]
            elif m["role"] == "user":
                turn += 1
                prefix = t["system"].format(system=system) if system and t["system"] else ""
                text += prefix + t["instruction"].format(input=m["content"], round=turn)
                system = ""
            else:
                eos = "" if t["suffix_as_eos"] else (self.tokenizer.eos_token or "")
                text += m["content"] + t["suffix"] + eos + t["sep"]
        ids = [i for i in bos if i is not None]
        return ids + list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stop_ids(self) -> list[int]:
        stops = {self.tokenizer.eos_token_id}
        xtuner = self._builtin()
        for word in (xtuner or {}).get("stop_words", []):
            token = self.tokenizer.convert_tokens_to_ids(word)
            if isinstance(token, int) and token != self.tokenizer.unk_token_id:
                stops.add(token)
        return [s for s in stops if s is not None]

    def reply(self, user: str, max_new_tokens: int = 256, stream: bool = False) -> str:
        from transformers import TextStreamer  # noqa: PLC0415

        ids = self.torch.tensor([self.prompt_ids(user)])
        streamer = TextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
        with self.torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                                      eos_token_id=self.stop_ids(), pad_token_id=self.stop_ids()[0])
        text = str(self.tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True)).strip()
        self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        return text


def template_check(tokenizer: Path, template: str | None, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compares sftpack's training ids (with ``template``) against the tokenizer's own chat
    template via transformers, record by record; returns the first difference of each."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    from .encoding import Encoder  # noqa: PLC0415
    from .errors import RecordError  # noqa: PLC0415

    reference = AutoTokenizer.from_pretrained(str(tokenizer))
    encoder = Encoder(tokenizer, template=template)
    results = []
    for index, record in enumerate(records):
        messages = record.get("messages", record)
        try:
            ours = encoder.encode(record).input_ids
        except RecordError as error:
            results.append({"record": index, "status": "rejected by sftpack", "detail": str(error)})
            continue
        try:
            rendered: Any = reference.apply_chat_template(messages, tokenize=True, return_dict=True)
            theirs = list(rendered["input_ids"])
        except Exception as error:  # the tokenizer's template refuses it
            results.append({"record": index, "status": "rejected by the tokenizer's template", "detail": str(error)})
            continue
        if ours == theirs:
            results.append({"record": index, "status": "identical", "tokens": len(ours)})
            continue
        pairs = enumerate(zip(ours, theirs, strict=False))
        at = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(theirs)))
        results.append({"record": index, "status": "differs", "position": at,
                        "sftpack": reference.decode(ours[max(0, at - 8): at + 8]),
                        "tokenizer": reference.decode(theirs[max(0, at - 8): at + 8])})
    return results

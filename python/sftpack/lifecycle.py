"""After training: merge adapters, chat with the training template, and check templates."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .record import RECORD_FILE, TrainingRecord

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def remote_code(*folders: Path | None) -> bool:
    """Whether the recipe that trained these folders ran the model's own code
    (model.trust_remote_code): loading them again needs the same."""
    for folder in folders:
        record = TrainingRecord.read(folder) if folder else None
        if record:
            return record.trust_remote_code
    return False


def saved_dtype(model: Path) -> str:
    """The dtype a Hugging Face model folder's weights were saved in (config.json)."""
    config = json.loads((model / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def qlora_base(base: Path, record: TrainingRecord, device: str, trust_remote_code: bool) -> Any:
    """The base model quantized to 4 bits as the QLoRA recipe in ``record`` quantized it while
    training (same settings, same dtype before quantizing): the weights its adapter was trained on."""
    from .train.model import DTYPES, load_4bit, quantization_config  # noqa: PLC0415

    method, model = record.config.get("method", {}), record.config.get("model", {})
    settings = quantization_config(method.get("quant_type", "nf4"), method.get("double_quant", True),
                                   method.get("compute_dtype", "bfloat16"))
    return load_4bit(base, settings, device, dtype=DTYPES[model.get("dtype", "float32")],
                     trust_remote_code=trust_remote_code)


def merge(base: Path, adapter: Path, out: Path, max_shard_size: str = "5GB", original_base: bool = False) -> Path:
    """Folds a LoRA adapter into its base model and writes a plain Hugging Face model (dtype of
    the base kept, sharded safetensors) that AutoModelForCausalLM loads.

    A QLoRA adapter was trained on the base's weights rounded to 4 bits; it is folded into those
    (dequantized to the base's dtype), so the merged model computes what training evaluated.
    ``original_base`` folds it into the unrounded weights instead."""
    import torch  # noqa: PLC0415
    from peft import PeftModel  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    from .train.model import bitsandbytes_problem  # noqa: PLC0415

    trust = remote_code(adapter)
    record = TrainingRecord.read(adapter)
    if record is not None and record.method == "qlora" and not original_base:
        problem = bitsandbytes_problem()
        if problem:
            raise ConfigError(f"{adapter} is a QLoRA adapter: folding it into the base as trained rounds the base "
                              f"to 4 bits as training did, which {problem}\nhint: pip install 'sftpack[qlora]', or "
                              "merge --original-base to fold it into the unrounded weights")
        model = qlora_base(base, record, "cpu", trust).dequantize().to(getattr(torch, saved_dtype(base)))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto", trust_remote_code=trust)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), max_shard_size=max_shard_size)
    for source in (adapter, base):
        for name in TOKENIZER_FILES:
            if (source / name).is_file() and not (out / name).exists():
                shutil.copy(source / name, out / name)
    if (adapter / RECORD_FILE).is_file():
        shutil.copy(adapter / RECORD_FILE, out / RECORD_FILE)
    return out


class ChatSession:
    """A conversation with a model, rendered with the template it was trained with.

    The prompt ids and stop tokens come from the engine, with the template and template kwargs
    recorded in the training record (``sftpack_train.json``): the model continues the ids it was
    trained to continue and stops at the end-of-turn token it was trained to write.

    Args:
        model: a Hugging Face model directory (full model, or the base when ``adapter`` is given).
        adapter: a LoRA adapter directory from ``sftpack train``; a QLoRA one gets its base
            quantized to 4 bits as training had it.
        template: override the template saved with the checkpoint: "tokenizer", a built-in XTuner
            name, or a .jinja file. A template that differs from the training one gets a warning.
        system: a system message for every turn.
    """

    def __init__(self, model: Path, adapter: Path | None = None, template: str | None = None,
                 system: str | None = None) -> None:
        import torch  # noqa: PLC0415

        from .train.generate import ChatFormat  # noqa: PLC0415

        self.torch = torch
        tokenizer_dir = adapter if adapter and (adapter / "tokenizer.json").is_file() else model
        trust = remote_code(adapter, model)
        self.chat = ChatFormat.for_folder(adapter or model, tokenizer_dir, template, base=model,
                                          trust_remote_code=trust)
        self.model: Any = self._load(model, adapter, trust)
        if adapter is not None:
            from peft import PeftModel  # noqa: PLC0415

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        if torch.cuda.is_available() and not getattr(self.model, "is_quantized", False):
            self.model.to("cuda")
        self.model.eval()
        self.system = system
        self.history: list[dict[str, str]] = []

    def _load(self, model: Path, adapter: Path | None, trust: bool) -> Any:
        """The model, or for a QLoRA adapter its base in 4 bits as training had it (where
        bitsandbytes is installed; else the unquantized base, with a warning)."""
        from transformers import AutoModelForCausalLM  # noqa: PLC0415

        from .train.model import bitsandbytes_problem  # noqa: PLC0415

        record = TrainingRecord.read(adapter) if adapter else None
        if record is not None and record.method == "qlora":
            problem = bitsandbytes_problem()
            if problem is None:
                return qlora_base(model, record, "cuda" if self.torch.cuda.is_available() else "cpu", trust)
            warnings.warn(f"{adapter} was trained on a 4-bit base, whose loading {problem}; chatting with the "
                          "unquantized base, whose replies can differ slightly\nhint: pip install 'sftpack[qlora]'",
                          stacklevel=3)
        return AutoModelForCausalLM.from_pretrained(str(model), dtype="auto", trust_remote_code=trust)

    @property
    def template_name(self) -> str:
        return self.chat.encoder.template_name

    def messages(self, user: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.history, {"role": "user", "content": user}]

    def prompt_ids(self, user: str) -> list[int]:
        return self.chat.prompt_ids(self.messages(user))

    def stop_ids(self) -> list[int]:
        return self.chat.stops.ids

    def reply(self, user: str, max_new_tokens: int = 256, stream: bool = False) -> str:
        from transformers import TextStreamer  # noqa: PLC0415

        from .train.generate import generate_reply  # noqa: PLC0415

        streamer = TextStreamer(self.chat.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                clean_up_tokenization_spaces=False) if stream else None
        text = generate_reply(self.model, self.chat, self.messages(user), max_new_tokens, streamer=streamer)
        self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        return text


def reply_prompt_mismatch(encoder: Any, record: dict[str, Any]) -> dict[str, Any] | None:
    """Where chat would not continue training: the first trained reply whose generation prompt
    (``encoder.prompt`` of the messages before it) is not the training ids up to exactly where
    that reply's trained tokens begin. None when every reply's prompt is."""
    encoded = encoder.encode(record)
    ids, mask = encoded.input_ids, encoded.loss_mask
    messages = record["messages"]
    for i, message in enumerate(messages):
        trained = message.get("loss", message["role"] == "assistant")
        if message["role"] != "assistant" or str(trained).lower() == "false" or i == 0 \
                or messages[i - 1]["role"] == "assistant":
            continue
        prompt = encoder.prompt(messages[:i], record.get("tools"))
        n = len(prompt)
        if ids[:n] != prompt or n >= len(ids) or not mask[n] or mask[n - 1]:
            at = next((j for j, (a, b) in enumerate(zip(ids, prompt, strict=False)) if a != b), min(n, len(ids)))
            return {"message": i, "position": at, "prompt_tokens": n}
    return None


def template_check(tokenizer: Path, data: Sequence[str | Path], template: str | None = None,
                   template_kwargs: dict[str, Any] | None = None, n: int = 100, format: str | None = None,
                   map_fn: str | None = None) -> list[dict[str, Any]]:
    """Compares sftpack's training ids (with ``template``) against the tokenizer's own chat
    template via transformers, record by record, and checks that the generation prompt chat and
    samples use for each reply continues the training ids; returns the first problem of each.

    The first ``n`` records of ``data`` are read by the engine, as training reads them (every
    format it reads, ``format`` and ``map_fn`` included); each result names its record as
    ``where`` (file:line, and the element of a JSON array).
    """
    from .encoding import Encoder  # noqa: PLC0415
    from .errors import RecordError  # noqa: PLC0415
    from .hf_tokenizer import load_hf_tokenizer  # noqa: PLC0415
    from .jobs import samples  # noqa: PLC0415

    kwargs = template_kwargs or {}
    encoder = Encoder(tokenizer, template=template, template_kwargs=kwargs)
    reference = load_hf_tokenizer(Path(tokenizer), encoder, reference=True)
    results: list[dict[str, Any]] = []
    # overlong=truncate: a record's length is preprocess's business, not the template's
    for sample in samples(data, tokenizer, n, template=template, template_kwargs=kwargs, format=format,
                          map_fn=map_fn, overlong="truncate"):
        where = f"{sample['file']}:{sample['line']}" + (
            f" (element {sample['index']})" if sample.get("index") is not None else "")
        record = sample.get("record")
        try:
            if record is None:
                raise RecordError(problems_text(sample["problems"]), sample["problems"])
            ours = encoder.encode(record).input_ids
            mismatch = reply_prompt_mismatch(encoder, record)
        except RecordError as error:
            results.append({"where": where, "status": "rejected by sftpack", "detail": str(error)})
            continue
        if mismatch:
            results.append({"where": where, "status": "prompt differs", **mismatch,
                            "detail": f"the generation prompt before message {mismatch['message']} is not the "
                                      f"training ids up to its reply (first difference at token "
                                      f"{mismatch['position']})"})
            continue
        messages = [{k: v for k, v in m.items() if k != "loss"} for m in record["messages"]]
        try:
            rendered: Any = reference.apply_chat_template(messages, tools=record.get("tools"), tokenize=True,
                                                          return_dict=True, **kwargs)
            theirs = list(rendered["input_ids"])
        except Exception as error:  # the tokenizer's template refuses it
            results.append({"where": where, "status": "rejected by the tokenizer's template", "detail": str(error)})
            continue
        if ours == theirs:
            results.append({"where": where, "status": "identical", "tokens": len(ours)})
            continue
        pairs = enumerate(zip(ours, theirs, strict=False))
        at = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(theirs)))
        results.append({"where": where, "status": "differs", "position": at,
                        "sftpack": reference.decode(ours[max(0, at - 8): at + 8]),
                        "tokenizer": reference.decode(theirs[max(0, at - 8): at + 8])})
    return results


def problems_text(problems: list[dict[str, Any]]) -> str:
    return "; ".join(f"{p['kind']}" + (f" at {p['path']}" if p.get("path") else "") + f": {p['message']}"
                     for p in problems)

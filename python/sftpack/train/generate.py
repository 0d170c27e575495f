"""Generating replies with the template a model was trained with: samples during training,
``sftpack chat`` and the quick start.

The prompt ids and the stop tokens come from the engine (:meth:`sftpack.Encoder.prompt`,
:meth:`sftpack.Encoder.stop_tokens`) with the template and tokenization mode the pack was made
with, so the model continues exactly the ids it was trained to continue and stops where it
learned to stop. Attention kernels that only run on packed training batches (PyTorch's varlen
kernel, or any other that refuses a KV cache) are swapped for SDPA while generating and put
back afterwards.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..encoding import Encoder, StopTokens
from ..hf_tokenizer import load_hf_tokenizer
from ..settings import TOKENIZER_TEMPLATE

# Attention implementations that run transformers' generation loop (KV cache, one new token at a
# time). Any other (sftpack's varlen, FlexAttention's per-shape compiles, a custom kernel) is
# replaced by SDPA while generating.
DECODE_CAPABLE = {"sdpa", "eager", "flash_attention_2", "flash_attention_3"}


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _set_attention(model: Any, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # older transformers read the name from the config at every forward
        model.config._attn_implementation = name


@contextlib.contextmanager
def decoding_attention(model: Any) -> Iterator[str]:
    """Runs the block with an attention implementation that can generate; yields its name."""
    base = _base_model(model)
    current = getattr(base.config, "_attn_implementation", None) or "sdpa"
    if current in DECODE_CAPABLE:
        yield current
        return
    _set_attention(base, "sdpa")
    try:
        yield "sdpa"
    finally:
        _set_attention(base, current)


def generation_config_eos(*folders: Path | None) -> list[int]:
    """The ``eos_token_id`` (one id or a list) of the first folder with a generation_config.json."""
    for folder in folders:
        path = folder / "generation_config.json" if folder else None
        if path and path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            return [eos] if isinstance(eos, int) else [int(i) for i in eos or []]
    return []


class ChatFormat:
    """The prompt and stop tokens of a training run, and the tokenizer that decodes replies.

    Args:
        encoder: the engine's encoder with the training template (see :meth:`for_folder`).
        tokenizer_dir: the Hugging Face tokenizer, for decoding and for stop texts.
        extra_stop_ids: more ids that end a reply (a generation_config.json's eos list).
    """

    def __init__(self, encoder: Encoder, tokenizer_dir: Path, extra_stop_ids: list[int] | None = None,
                 trust_remote_code: bool = False) -> None:
        self.encoder = encoder
        self.tokenizer = load_hf_tokenizer(tokenizer_dir, encoder, trust_remote_code)
        engine = encoder.stop_tokens()
        self.stops = StopTokens(ids=sorted(set(engine.ids) | set(extra_stop_ids or [])), texts=engine.texts)

    @classmethod
    def for_pack(cls, manifest: dict[str, Any], model_dir: Path, trust_remote_code: bool = False) -> ChatFormat:
        """What a run on this pack trains: its recorded template and kwargs, the model's tokenizer."""
        encoder = Encoder.for_pack(manifest, model_dir)
        return cls(encoder, model_dir, generation_config_eos(model_dir), trust_remote_code)

    @classmethod
    def for_folder(cls, folder: Path, tokenizer_dir: Path, template: str | None = None,
                   base: Path | None = None, trust_remote_code: bool = False) -> ChatFormat:
        """The format of a model or adapter folder: the template its training record names
        (``sftpack_train.json``), else the tokenizer's own chat template; ``template`` overrides
        it ("tokenizer", a built-in name or a .jinja file), with a warning if it differs."""
        from ..record import TrainingRecord  # noqa: PLC0415

        record = TrainingRecord.read(folder)
        trained = None
        if record and record.template:
            trained = Encoder(tokenizer_dir, record.template["name"], template_source=record.template["source"],
                              template_kwargs=record.template_kwargs)
        if template is None:
            encoder = trained or Encoder(tokenizer_dir)
        else:
            encoder = Encoder(tokenizer_dir, None if template == TOKENIZER_TEMPLATE else template,
                              template_kwargs=trained.template_kwargs if trained else None)
            if trained and encoder.template_source != trained.template_source:
                warnings.warn(f"the model was trained with template {trained.template_name!r}, not {template!r}: "
                              "replies may degrade", stacklevel=2)
        return cls(encoder, tokenizer_dir, generation_config_eos(folder, base), trust_remote_code)

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        return self.encoder.prompt(messages)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else (self.stops.ids[0] if self.stops.ids else 0)

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"eos_token_id": self.stops.ids or None, "pad_token_id": self.pad_token_id}
        if self.stops.texts:
            kwargs.update(stop_strings=self.stops.texts, tokenizer=self.tokenizer)
        return kwargs

    def reply_text(self, generated: list[int]) -> str:
        """The reply in generated ids: up to the first stop token or stop text, decoded."""
        cut = next((i for i, t in enumerate(generated) if t in self.stops.ids), len(generated))
        # no clean-up: it strips spaces before punctuation, which BPE replies really contain
        text = str(self.tokenizer.decode(generated[:cut], skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False))
        for stop in self.stops.texts:
            text = text.split(stop, 1)[0]
        return text.strip()


def generate_reply(model: Any, chat: ChatFormat, messages: list[dict[str, Any]], max_new_tokens: int = 64,
                   autocast_dtype: torch.dtype | None = None, synced_gpus: bool = False,
                   streamer: Any = None) -> str:
    """A greedy reply to ``messages`` (ending with a user message). ``autocast_dtype`` runs the
    model as training did (16-bit weights, fp32 adapters); ``synced_gpus`` keeps every rank in
    the generation loop, as ZeRO-3 needs when each rank holds a shard of the weights."""
    ids = chat.prompt_ids(messages)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    precision: Any = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    try:
        with decoding_attention(model), torch.no_grad(), precision:
            out = model.generate(torch.tensor([ids], device=device), max_new_tokens=max_new_tokens, do_sample=False,
                                 synced_gpus=synced_gpus, streamer=streamer, **chat.generate_kwargs())
    finally:
        if was_training:
            model.train()
    return chat.reply_text([int(t) for t in out[0][len(ids):]])

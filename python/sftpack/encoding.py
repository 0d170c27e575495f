"""Encoding single conversations: the same engine ``sftpack preprocess`` uses, one record at a
time, for tests, notebooks and custom pipelines."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from . import _core
from .settings import OVERLONG, PathLike, job_settings

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedConversation:
    """Token ids of one conversation and which of them are trained.

    ``labels`` equals ``input_ids`` where trained and -100 elsewhere (the label of position i is
    the token at i; shifting happens in the loss, as in transformers).
    """

    input_ids: list[int]
    loss_mask: list[int]
    truncated: bool

    @property
    def labels(self) -> list[int]:
        return [t if m else IGNORE_INDEX for t, m in zip(self.input_ids, self.loss_mask, strict=False)]


@dataclass(frozen=True)
class StopTokens:
    """What ends a generated assistant turn: token ids, and texts for end markers the tokenizer
    has no single token for."""

    ids: list[int]
    texts: list[str]


def pack_template_kwargs(manifest: dict[str, Any]) -> dict[str, Any]:
    """The template kwargs a pack was encoded with, from its manifest."""
    kwargs: dict[str, Any] = manifest.get("config", {}).get("encode", {}).get("template_kwargs") or {}
    return kwargs


class Encoder:
    """Encodes records with one tokenizer and template.

    Args:
        tokenizer: a Hugging Face tokenizer directory or tokenizer.json.
        template: None for the tokenizer's own chat template, a built-in XTuner template name
            (``sftpack templates list``), or a path to a Jinja file.
        max_length: longer conversations follow ``overlong``: "drop" (raise RecordError),
            "truncate" or "error"; None (the default here, unlike a job's settings): no limit.
        template_kwargs: extra variables for Jinja templates (e.g. ``{"enable_thinking": False}``).
        template_source: the template's full source as a pack's manifest records it; ``template``
            then only names it (see :meth:`for_pack`).
    """

    def __init__(
        self,
        tokenizer: PathLike,
        template: str | None = None,
        max_length: int | None = None,
        overlong: str = OVERLONG[0],
        template_kwargs: dict[str, Any] | None = None,
        template_source: str | None = None,
    ) -> None:
        settings = job_settings([], tokenizer, template=template, max_length=max_length, overlong=overlong,
                                template_kwargs=template_kwargs, template_source=template_source)
        if max_length is None:  # one record at a time: its length is the caller's to judge
            settings = replace(settings, encode=replace(settings.encode, max_length=None))
        self._encoder = _core.PyEncoder(json.dumps(settings.to_engine()))
        self.template_kwargs = dict(template_kwargs or {})

    @classmethod
    def for_pack(cls, manifest: dict[str, Any], tokenizer: PathLike) -> Encoder:
        """The encoder a pack was made with (its template, as recorded, and template kwargs), to
        render generation prompts that continue exactly what training saw."""
        template = manifest["template"]
        return cls(tokenizer, template["name"], template_kwargs=pack_template_kwargs(manifest),
                   template_source=template["source"])

    @property
    def template_name(self) -> str:
        return self._encoder.template_name

    @property
    def template_source(self) -> str:
        return self._encoder.template_source

    @property
    def tokenizer_engine(self) -> dict[str, Any]:
        """Which tokenizer engine encodes ("tokenizers 1.0.0-rc.3", or "tokenizers 0.23" with a
        ``note`` saying why), and of the texts encoded so far with token starts, how many needed
        0.23 for them (``starts_from_old_engine``). Ids and masks are the same either way."""
        report: dict[str, Any] = json.loads(self._encoder.tokenizer_engine)
        return report

    def encode(self, record: dict[str, Any] | list[dict[str, Any]], format: str | None = None) -> EncodedConversation:
        """Encodes one record (any supported format), or a bare list of OpenAI messages.

        Raises:
            RecordError: the record is invalid, carries no trained token, or is too long; the
                problems are in ``sftpack.errors.record_problems(err)``.
        """
        if isinstance(record, list):
            record = {"messages": record}
        out = self._encoder.encode(json.dumps(record, ensure_ascii=False), format)
        return EncodedConversation(
            input_ids=list(out["input_ids"]),  # type: ignore[call-overload]
            loss_mask=list(out["loss_mask"]),  # type: ignore[call-overload]
            truncated=bool(out["truncated"]),
        )

    def prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The ids a model continues to write the reply to ``messages`` (OpenAI format, ending with a
        user or tool message): rendered and tokenized as training rendered the turns before a
        reply, so they equal the training ids up to where that reply's trained tokens begin.

        Raises:
            RecordError: the messages are invalid, or the template refuses them.
        """
        record: dict[str, Any] = {"messages": messages}
        if tools:
            record["tools"] = tools
        return self._encoder.prompt(json.dumps(record, ensure_ascii=False))

    def stop_tokens(self) -> StopTokens:
        """What training taught a model to write at the end of a reply (the trained end-of-turn
        token(s)), the template's stop words, and EOS."""
        stops = self._encoder.stop_tokens()
        return StopTokens(ids=list(stops["ids"]), texts=list(stops["texts"]))  # type: ignore[call-overload]

    def decode(self, ids: list[int]) -> str:
        return self._encoder.decode(ids)

    def token_to_id(self, token: str) -> int | None:
        """The id of a token (an added token such as ``<|im_end|>``, or a vocabulary piece)."""
        return self._encoder.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """The vocabulary with added tokens, as transformers' ``len(tokenizer)`` counts it."""
        return self._encoder.vocab_size


def encode_conversation(
    messages: dict[str, Any] | list[dict[str, Any]],
    tokenizer: PathLike,
    template: str | None = None,
    **options: Any,
) -> EncodedConversation:
    """Encodes one conversation; see :class:`Encoder` for the arguments. Loads the tokenizer on
    every call: keep an :class:`Encoder` for many records."""
    return Encoder(tokenizer, template, **options).encode(messages)

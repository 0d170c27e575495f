"""transformers' tokenizer for a tokenizer folder, held to the engine's tokenization.

Training ids come from sftpack's engine, which reads tokenizer.json as current transformers does.
Replies are decoded (chat, samples during training), stop strings matched and ``sftpack
check-template``'s reference rendered through transformers. transformers 5.0 to 5.21 build some
tokenizers from the class their tokenizer_config.json names instead of from tokenizer.json:
DeepSeek-V3 names LlamaTokenizerFast over a byte-level tokenizer.json, and a reply then decodes as
``AreĠyouĠ...``. So a loaded tokenizer is checked on a probe text against the engine, and one that
tokenizes or decodes it differently is replaced by tokenizer.json as is, with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .encoding import Encoder
from .errors import ConfigError, RecordError

# Spaces, digits, punctuation, newlines, tabs, CJK, accents and an emoji: the pieces whose
# pre-tokenization differs between byte-level and SentencePiece-style pipelines.
PROBE = "Hello, world! It's 2026: 12,345.67 apples\n\n  two  spaces\tand a tab; 你好，世界 — ünïcødé 🙂 end"


def agrees_with_engine(tokenizer: Any, encoder: Encoder) -> bool:
    """Whether ``tokenizer`` (transformers') tokenizes and decodes the probe as the engine does."""
    try:
        ours = encoder.encode({"text": PROBE}, format="text").input_ids
    except RecordError:  # a tokenizer that cannot encode the probe at all: nothing to compare
        return True
    theirs = [int(i) for i in tokenizer(PROBE, add_special_tokens=False)["input_ids"]]
    # the engine's text is the tokenizer's own BOS/EOS around the body, and EOS: which of those
    # transformers adds differs between its versions (4.x gave DeepSeek-V3 a BOS), the body must not
    extra = len(ours) - len(theirs)
    same_ids = 0 <= extra <= 3 and any(ours[i:i + len(theirs)] == theirs for i in range(extra + 1))
    decoded = tokenizer.decode(theirs, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return same_ids and decoded == encoder.decode(theirs)


def load_hf_tokenizer(folder: Path, encoder: Encoder, trust_remote_code: bool = False,
                      reference: bool = False) -> Any:
    """transformers' tokenizer for ``folder``: ``AutoTokenizer``'s if it agrees with ``encoder``
    (the engine's tokenizer of the same folder), else tokenizer.json as is, with a warning.
    ``reference``: the tokenizer is what sftpack's ids are compared with (``template check``), so
    one that transformers cannot load from the folder's tokenizer.json at all is an error, not a
    warning: every record would differ, and none for a reason in the data or the template."""
    import transformers  # noqa: PLC0415
    from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: PLC0415

    try:
        loaded = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, TypeError, ValueError) as error:  # transformers 4.x fails where 5.x builds an empty one
        raise ConfigError(f"transformers {transformers.__version__} cannot load the tokenizer in {folder} ({error})"
                          f"\nhint: {_tokenizer_json_fix(folder)}") from error
    if agrees_with_engine(loaded, encoder):
        return loaded
    what = (f"transformers {transformers.__version__} loads the tokenizer in {folder} as "
            f"{type(loaded).__name__}, which tokenizes or decodes differently from its tokenizer.json "
            "(what sftpack trains with)")
    unreadable = "decoded replies may not read as the model wrote them"
    if not (folder / "tokenizer.json").is_file():
        if reference:
            raise ConfigError(f"{what}: it is no reference to compare sftpack's ids with", _tokenizer_json_fix(folder))
        warnings.warn(f"{what}: {unreadable}\nhint: {_tokenizer_json_fix(folder)}", stacklevel=2)
        return loaded
    exact = PreTrainedTokenizerFast.from_pretrained(str(folder))
    if not agrees_with_engine(exact, encoder):
        warnings.warn(f"{what}, and so does tokenizer.json loaded as is: {unreadable}", stacklevel=2)
        return loaded
    warnings.warn(f"{what}; sftpack uses tokenizer.json as is (PreTrainedTokenizerFast) instead\nhint: "
                  "transformers 5.0 to 5.21 do this for some tokenizers (DeepSeek-V3): upgrade transformers, "
                  f"or set \"tokenizer_class\": \"PreTrainedTokenizerFast\" in {folder / 'tokenizer_config.json'} "
                  "so other tools load it right too", stacklevel=2)
    return exact


def _tokenizer_json_fix(folder: Path) -> str:
    if (folder / "tokenizer.json.gz").is_file():
        return f"unpack {folder / 'tokenizer.json.gz'}: transformers reads tokenizer.json only"
    if (folder / "tokenizer.json").is_file():
        return "check that the folder loads with transformers.AutoTokenizer on its own"
    return f"give the folder a tokenizer.json (`sftpack convert-tokenizer {folder}`)"

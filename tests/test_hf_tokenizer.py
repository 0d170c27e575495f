"""transformers' tokenizer, where sftpack uses one (decoding chat replies and samples, stop strings,
the template check), tokenizes and decodes as the engine that made the training ids — also under
transformers 5.0 to 5.21, which build DeepSeek-V3's byte-level tokenizer as a SentencePiece-style
LlamaTokenizer: sftpack notices, says so, and uses tokenizer.json as is."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")

from sftpack.encoding import Encoder  # noqa: E402
from sftpack.errors import ConfigError  # noqa: E402
from sftpack.hf_tokenizer import agrees_with_engine, load_hf_tokenizer  # noqa: E402
from sftpack.lifecycle import template_check  # noqa: E402

from .conftest import DEMO, data_path  # noqa: E402

REPLY = "Are you based on davinci-003? 你好 — yes."


def load_quietly(folder: Path) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = load_hf_tokenizer(folder, Encoder(folder))
    return tokenizer, [str(w.message) for w in caught if "sftpack" in str(w.message)]


def load_as_transformers_5_0_to_5_21_did(monkeypatch: pytest.MonkeyPatch) -> None:
    """AutoTokenizer gives DeepSeek-V3 a SentencePiece-style pipeline (Metaspace pre-tokenizer and
    decoder) over its byte-level vocabulary, as those transformers versions built LlamaTokenizer."""
    from tokenizers import decoders, pre_tokenizers

    original = transformers.AutoTokenizer.from_pretrained

    def misloaded(*args: Any, **kwargs: Any) -> Any:
        tokenizer = original(*args, **kwargs)
        backend = tokenizer.backend_tokenizer
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
        return tokenizer

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", misloaded)


@pytest.mark.parametrize("name", ["qwen3", "deepseek-v3", "phi-3-mini"])
def test_transformers_tokenizer_is_kept_where_it_agrees_with_the_engine(
        name: str, tokenizer_dir: Callable[[str], Path]) -> None:
    folder = tokenizer_dir(name)
    tokenizer, said = load_quietly(folder)
    assert said == []
    assert type(tokenizer) is type(transformers.AutoTokenizer.from_pretrained(str(folder)))
    assert agrees_with_engine(tokenizer, Encoder(folder))


def test_a_misloaded_tokenizer_is_replaced_by_its_tokenizer_json_and_sftpack_says_so(
        monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Callable[[str], Path]) -> None:
    folder = tokenizer_dir("deepseek-v3")
    encoder = Encoder(folder)
    ids = encoder.encode({"text": REPLY}, format="text").input_ids[:-1]  # without the EOS it appends
    load_as_transformers_5_0_to_5_21_did(monkeypatch)
    misloaded = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert "Ġ" in misloaded.decode(ids) and not agrees_with_engine(misloaded, encoder)

    tokenizer, said = load_quietly(folder)
    assert tokenizer.decode(ids, skip_special_tokens=True) == REPLY
    assert len(said) == 1 and f"transformers {transformers.__version__}" in said[0]
    assert "PreTrainedTokenizerFast" in said[0] and str(folder / "tokenizer_config.json") in said[0]


def test_chat_replies_decode_as_written_under_a_misloading_transformers(
        monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Callable[[str], Path]) -> None:
    pytest.importorskip("torch")
    from sftpack.train.generate import ChatFormat

    folder = tokenizer_dir("deepseek-v3")
    load_as_transformers_5_0_to_5_21_did(monkeypatch)
    with pytest.warns(UserWarning, match="sftpack uses tokenizer.json as is"):
        chat = ChatFormat(Encoder(folder), folder)
    reply = chat.encoder.encode({"text": REPLY}, format="text").input_ids  # ends with EOS, a stop token
    assert chat.reply_text(reply + [7, 8, 9]) == REPLY


def test_template_check_compares_against_the_tokenizer_json_under_a_misloading_transformers(
        monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Callable[[str], Path]) -> None:
    folder = tokenizer_dir("deepseek-v3")
    data = [data_path("datasets", "openai", "toy_chat_fine_tuning.jsonl.gz")]
    load_as_transformers_5_0_to_5_21_did(monkeypatch)
    with pytest.warns(UserWarning, match="sftpack uses tokenizer.json as is"):
        results = template_check(folder, data, n=5)
    assert len(results) == 5 and {r["status"] for r in results} == {"identical"}, results


def gzipped_only(folder: Path) -> Path:
    """A Qwen3 tokenizer folder as tests/data keeps it: tokenizer.json.gz, no tokenizer.json."""
    folder.mkdir()
    for source in data_path("tokenizers", "qwen3").iterdir():
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


def test_a_tokenizer_transformers_cannot_read_is_named_with_the_fix(tmp_path: Path) -> None:
    # the engine reads tokenizer.json.gz; transformers 5 silently builds an empty vocabulary from
    # it (a warning), transformers 4 fails deep inside the tokenizer class (an error): both name the fix
    folder = gzipped_only(tmp_path / "packed")
    try:
        _, said = load_quietly(folder)
    except ConfigError as error:
        said = [str(error)]
        assert "cannot load the tokenizer" in said[0]
    else:
        assert len(said) == 1 and "decoded replies may not read as the model wrote them" in said[0]
    assert f"hint: unpack {folder / 'tokenizer.json.gz'}" in said[0]


def test_template_check_refuses_a_reference_transformers_cannot_read(tmp_path: Path) -> None:
    # compared with an empty vocabulary, every record would differ for no reason in the data
    folder = gzipped_only(tmp_path / "packed")
    data = [data_path("datasets", "openai", "toy_chat_fine_tuning.jsonl.gz")]
    with pytest.raises(ConfigError) as refused:
        template_check(folder, data, n=2)
    assert refused.value.hint is not None and f"unpack {folder / 'tokenizer.json.gz'}" in refused.value.hint


def test_the_demo_tokenizer_needs_no_replacement() -> None:
    assert load_quietly(DEMO)[1] == []

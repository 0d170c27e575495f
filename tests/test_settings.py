"""One typed definition of a job's settings: Python's dataclasses mirror the engine's Rust
structs (the same fields, the same defaults), every problem is reported at once, and a pack's
manifest gives back the settings that made it (Python -> Rust -> manifest -> Python)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sftpack import ConfigError, _core
from sftpack.preprocess import preprocess, run_preprocess
from sftpack.settings import JobSettings, PreprocessSettings, preprocess_settings

from .conftest import DEMO

MAP_FN = "def qa(record):\n    return {'messages': [{'role': 'user', 'content': record['q']},\n" \
         "                         {'role': 'assistant', 'content': record['a']}]}\n"


def test_python_and_rust_fill_in_the_same_defaults() -> None:
    minimal = {"job": {"inputs": ["data.jsonl"], "tokenizer": "tok"}, "out": "pack"}
    engine = json.loads(_core.normalize_preprocess_config(json.dumps(minimal)))
    python = PreprocessSettings(job=JobSettings(inputs=("data.jsonl",), tokenizer="tok"), out="pack").to_engine()
    assert engine == python


def test_every_setting_the_engine_reads_is_typed_in_python() -> None:
    settings = preprocess_settings(["d.jsonl"], "tok", "out", max_length=512, overlong="truncate", threads=3,
                                   template="qwen_chat", format="openai", template_kwargs={"x": 1}, seed=7,
                                   window=64, shard_size_mb=2, overwrite=True, val_size=0.1, pack=False)
    sent = settings.to_engine({"spec": "m:f", "fingerprint": "0" * 64})
    assert json.loads(_core.normalize_preprocess_config(json.dumps(sent))) == sent


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        preprocess_settings(["d.jsonl"], "tok", "out", max_length=-1, overlong="cut", window=0, seed=-3,
                            val_size="half", threads=1.5, format="csv", shards=2)
    text = str(error.value)
    assert text.startswith("8 problem(s) in the preprocess settings")
    for name in ("max_length", "overlong", "window", "seed", "val_size", "threads", "format", "shards"):
        assert f"\n  `{name}`: " in text, name
    assert "`shards`: unknown setting" in text


def test_a_manifest_gives_back_the_settings_that_made_the_pack(tmp_path: Path) -> None:
    (tmp_path / "qa.py").write_text(MAP_FN)
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) for i in range(40)) + "\n")
    settings = preprocess_settings([data], DEMO, tmp_path / "pack", max_length=128, overlong="truncate",
                                   template="qwen_chat", template_kwargs={"unused": True}, seed=3, window=16,
                                   val_size=4, threads=2, map_fn=f"{tmp_path / 'qa.py'}:qa")
    manifest = run_preprocess(settings)["manifest"]
    recorded = PreprocessSettings.from_manifest(manifest, tmp_path / "pack")
    assert recorded == replace(settings, job=replace(settings.job, threads=None)), "threads never shape the output"
    assert run_preprocess(recorded)["status"] == "up to date"


def test_the_api_and_the_settings_build_the_same_run(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    first = preprocess([data], DEMO, tmp_path / "pack", max_length=64)
    again = run_preprocess(preprocess_settings([data], DEMO, tmp_path / "pack", max_length=64))
    assert again["status"] == "up to date" and again["manifest"]["key"] == first["manifest"]["key"]

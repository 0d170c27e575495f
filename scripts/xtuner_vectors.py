"""Regenerates tests/vectors/xtuner/: what XTuner 0.2.0 itself produces for every built-in
PROMPT_TEMPLATE, as reference vectors for tests/test_xtuner_parity.py.

    python scripts/xtuner_vectors.py            # makes a throwaway venv in /tmp, then runs there

The venv gets XTuner 0.2.0 and the transformers it pins (4.48.0); torch, numpy, pillow and
requests come from this Python's site-packages. XTuner's own functions do the work, the path of
its custom-dataset docs: openai_map_fn -> template_map_fn_factory(PROMPT_TEMPLATE[name]) ->
encode_fn(max_length=10**9). The conversations are shared/data/goldens/xtuner/input.jsonl and the
tokenizer shared/data/tokenizers/llama3 (it has a BOS token, so XTuner's BOS rules show). Only
vectors are committed, never XTuner: one gzipped JSON line per conversation,
{"line", "input_ids", "trained": [[start, end), ...]} with the spans where XTuner computes loss,
or {"line", "error"} where XTuner itself fails (a system message for a template without SYSTEM).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "tests" / "vectors" / "xtuner"
VENV = Path("/tmp/sftpack-xtuner-venv")
TOKENIZER = "llama3"
PINS = ["xtuner==0.2.0", "mmengine==0.10.6", "transformers==4.48.0", "tokenizers<0.22", "huggingface-hub<1.0",
        "addict", "yapf", "platformdirs", "termcolor", "loguru"]


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


def generate() -> None:
    """Runs inside the venv."""
    import xtuner  # noqa: PLC0415
    from transformers import AutoTokenizer  # noqa: PLC0415
    from xtuner.utils import PROMPT_TEMPLATE  # noqa: PLC0415

    package = Path(xtuner.__file__).parent
    maps = package / "dataset" / "map_fns"
    openai_map_fn = load_file_module("xt_openai", maps / "dataset_map_fns" / "openai_map_fn.py").openai_map_fn
    factory = load_file_module("xt_template", maps / "template_map_fn.py").template_map_fn_factory
    encode_fn = load_file_module("xt_utils", package / "dataset" / "utils.py").encode_fn

    tokenizer = AutoTokenizer.from_pretrained(str(SHARED / "tokenizers" / TOKENIZER), trust_remote_code=True)
    inputs = [json.loads(line) for line in (SHARED / "goldens" / "xtuner" / "input.jsonl").read_text().splitlines()]
    OUT.mkdir(parents=True, exist_ok=True)
    for name in sorted(PROMPT_TEMPLATE):
        template_map_fn = factory(template=PROMPT_TEMPLATE[name])
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
        target = OUT / f"{TOKENIZER}-{name}.jsonl.gz"
        with gzip.GzipFile(target, "wb", mtime=0) as f:  # mtime 0: same bytes every run
            f.write(("\n".join(lines) + "\n").encode())
        print(f"{target.relative_to(ROOT)}: {len(lines)} conversations")
    (OUT / "VERSIONS.json").write_text(json.dumps({
        "xtuner": xtuner.__version__, "transformers": __import__("transformers").__version__,
        "tokenizer": f"shared/data/tokenizers/{TOKENIZER}", "input": "shared/data/goldens/xtuner/input.jsonl",
        "templates": sorted(PROMPT_TEMPLATE)}, indent=2) + "\n")


def main() -> None:
    if "--inside-venv" in sys.argv:
        generate()
        return
    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED} (the shared tokenizers and input conversations)")
    python = make_venv()
    subprocess.run([str(python), __file__, "--inside-venv"], check=True)


if __name__ == "__main__":
    main()

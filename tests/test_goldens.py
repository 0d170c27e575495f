"""Third-party goldens in shared/data: mistral-common's token ids for its own SentencePiece
tokenizers and Jinja templates, after a one-time `sftpack convert-tokenizer`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sftpack import Encoder

from .conftest import shared_path

pytest.importorskip("sentencepiece")
pytest.importorskip("transformers")

# (model version, case): the cases whose ids sftpack reproduces exactly (docs/data.md explains
# the tool-call cases it does not).
CASES = [("v1", "no_tools"), ("v2", "no_tools"), ("v3", "no_tools")]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for version in ("v1", "v2", "v3"):
        source = shared_path("tokenizers", f"mistral-spm-{version}")
        target = tmp_path_factory.mktemp(f"mistral-{version}")
        for file in source.iterdir():
            shutil.copy(file, target / file.name)
        result = subprocess.run([sys.executable, "-m", "sftpack", "convert-tokenizer", str(target)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        out[version] = target
    return out


@pytest.mark.parametrize(("version", "case"), CASES)
def test_mistral_common_ids(converted: dict[str, Path], version: str, case: str) -> None:
    directory = converted[version]
    template = next(directory.glob("*.jinja"))
    sample = json.loads(shared_path("goldens", "mistral-common", case, "sample.json").read_text())
    golden = json.loads(shared_path("goldens", "mistral-common", case, f"tokens_{version}.json").read_text())
    out = Encoder(directory, template=str(template)).encode(sample)
    assert out.input_ids == golden["tokens"]
    assert sum(out.loss_mask) > 0

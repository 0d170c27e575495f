"""The runnable examples in examples/ run as documented (CPU, tiny model)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytest.importorskip("torch")
pytest.importorskip("transformers")



@pytest.fixture
def pack_and_model(tiny_setup: dict[str, Path]) -> tuple[Path, Path]:
    return tiny_setup["pack"], tiny_setup["base"]


def test_custom_loop_trains_and_reports_loader_state(pack_and_model: tuple[Path, Path]) -> None:
    pack, model = pack_and_model
    result = subprocess.run([sys.executable, str(REPO / "examples" / "custom_loop.py"), str(pack), str(model),
                             "--steps", "12"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", result.stdout)]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert "batches_done" in result.stdout


def test_hf_trainer_consumes_a_pack(pack_and_model: tuple[Path, Path], tmp_path: Path) -> None:
    pack, model = pack_and_model
    result = subprocess.run([sys.executable, str(REPO / "examples" / "hf_trainer.py"), str(pack), str(model),
                             str(tmp_path), "--steps", "6"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "final training loss" in result.stdout

"""Every ready recipe in configs/ validates, and its header gives the exact command."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPO

pytest.importorskip("torch")

from sftpack.train import load_config  # noqa: E402

RECIPES = sorted((REPO / "python" / "sftpack" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_documents_its_command(recipe: Path) -> None:
    config = load_config(recipe)
    assert config.model.path and config.data.pack and config.output.dir
    header = recipe.read_text().split("\n\n")[0]
    assert f"sftpack configs copy {recipe.stem} . && " in header
    assert f"sftpack train {recipe.name}" in header

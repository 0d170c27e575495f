"""Every ready recipe in configs/ validates, and its header gives the exact command. Their model
paths (/models/...) are the user's to fill in, so paths are not checked here."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPO

pytest.importorskip("torch")

from sftpack.train import load_config  # noqa: E402
from sftpack.train.zero import NAMES, load_ds_config  # noqa: E402

RECIPES = sorted((REPO / "python" / "sftpack" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_documents_its_command(recipe: Path) -> None:
    config = load_config(recipe, check_paths=False)
    assert config.model.path and config.data.pack and config.output.dir
    header = recipe.read_text().split("\n\n")[0]
    assert f"sftpack configs copy {recipe.stem} . && " in header
    assert f"sftpack train {recipe.name}" in header


def test_the_library_covers_every_family_and_method() -> None:
    families = {p.stem.rsplit("_", 1)[0] for p in RECIPES}
    for family in ("qwen2_5", "qwen3", "llama3_1", "llama3_2", "internlm2_5", "internlm3", "mistral", "gemma2",
                   "gemma3", "phi3", "deepseek"):
        assert any(f.startswith(family) for f in families), family
    for family in families:
        for method in ("qlora", "lora", "full"):
            assert (REPO / "python" / "sftpack" / "configs" / f"{family}_{method}.yaml").is_file()


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.stem.endswith("_full")], ids=lambda p: p.name)
def test_full_recipes_shard_with_a_shipped_deepspeed_config(recipe: Path) -> None:
    config = load_config(recipe, check_paths=False)
    assert config.distributed.deepspeed in NAMES
    ds = load_ds_config(config, world=8)
    assert ds["bf16"]["enabled"] and ds["gradient_accumulation_steps"] == config.optim.grad_accum

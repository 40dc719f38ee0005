"""Every recipe in configs/ is a valid config whose model exists and serves the recipe's task (a typo in
a key, a model name or a task would otherwise only show when someone runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.config import load_config
from cnnkit.models.registry import MODELS, list_models, model_task
from cnnkit.tasks import list_tasks

# (space_*.yaml are search spaces for cnnkit tune, not configs)
RECIPES = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")
                 if not p.name.startswith("space_"))


def test_there_are_recipes():
    assert len(RECIPES) >= 10


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid(path):
    cfg = load_config(path)
    assert cfg.task in list_tasks()
    if cfg.model.name is not None:
        list_models()
        assert cfg.model.name in MODELS, cfg.model.name
        serves = {"forecast": ("forecast", "timeseries")}.get(cfg.task, (cfg.task,))
        assert model_task(cfg.model.name) in serves, (cfg.model.name, cfg.task)

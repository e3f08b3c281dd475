"""Recipes that build on a base recipe: the chain is read base first, cycles and missing bases are clear errors."""

import pytest

from keenvision.core.recipe import read_recipe_layers


def test_base_chain_is_read_base_first(tmp_path):
    (tmp_path / "root.yaml").write_text("lr: 0.1\nmax_steps: 100\n")
    (tmp_path / "arms").mkdir()
    (tmp_path / "arms" / "middle.yaml").write_text("base: ../root.yaml\nmax_steps: 200\n")
    (tmp_path / "arms" / "leaf.yaml").write_text("base: middle.yaml\nrun_dir: runs/leaf\n")
    layers = read_recipe_layers(tmp_path / "arms" / "leaf.yaml")
    assert layers == [{"lr": 0.1, "max_steps": 100}, {"max_steps": 200}, {"run_dir": "runs/leaf"}]


def test_cycle_and_missing_base_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        read_recipe_layers(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(ValueError, match="gone.yaml: no such file"):
        read_recipe_layers(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="not a mapping"):
        read_recipe_layers(tmp_path / "d.yaml")

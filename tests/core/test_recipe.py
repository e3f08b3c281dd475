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


def test_load_recipe_merges_sections_dotted_keys_and_names_unknown_keys(tmp_path):
    from keenvision.core.recipe import load_recipe

    defaults = {"lr": 0.1, "model": {"width": 32, "depth": 4}, "data": {"train": {"boxes": [1]}, "val": None},
                "select": None}
    (tmp_path / "base.yaml").write_text("lr: 0.2\nmodel: {width: 64}\n")
    (tmp_path / "arm.yaml").write_text("base: base.yaml\nmodel.depth: 6\ndata: {train: {landmarks: [2]}}\n")
    config = load_recipe(tmp_path / "arm.yaml", defaults, {"lr": None, "model.width": 128, "select": {"a": [1]}},
                         replace=("data.train",))
    assert config["lr"] == 0.2 and config["model"] == {"width": 128, "depth": 6}
    assert config["data"]["train"] == {"landmarks": [2]}  # replaced whole, as asked
    assert config["select"] == {"a": [1]} and defaults["model"] == {"width": 32, "depth": 4}  # defaults untouched
    with pytest.raises(ValueError, match=r"unknown config keys \['lr_max', 'model.heads'\]; valid: .*model.width"):
        load_recipe(None, defaults, {"lr_max": 1, "model": {"heads": 2}})
    (tmp_path / "empty_section.yaml").write_text("lr: 0.3\nmodel:\n")
    assert load_recipe(tmp_path / "empty_section.yaml", defaults)["model"] == {"width": 32, "depth": 4}
    with pytest.raises(ValueError, match="config key model takes a mapping of its keys"):
        load_recipe(None, defaults, {"model": 3})


def test_typed_recipe_checks_every_key_by_its_type(tmp_path):
    from dataclasses import dataclass, field

    from keenvision.core.recipe import Section, typed_recipe

    @dataclass
    class Model(Section):
        width: int = 32
        dilations: list[int] = field(default_factory=lambda: [6, 12])

    @dataclass
    class Recipe(Section):
        lr: float = 0.1
        loss: str = "ce"
        resume: bool = False
        limit: int | None = None
        model: Model = field(default_factory=Model)

    (tmp_path / "arm.yaml").write_text("lr: 1\nmodel.width: 64\n")
    recipe = typed_recipe(Recipe, tmp_path / "arm.yaml", {"limit": 5})
    assert recipe.lr == 1.0 and isinstance(recipe.lr, float) and recipe.model.width == 64 and recipe.limit == 5
    assert recipe["model"]["dilations"] == [6, 12] and dict(**recipe["model"]) == {"width": 64, "dilations": [6, 12]}
    assert recipe.as_dict() == {"lr": 1.0, "loss": "ce", "resume": False, "limit": 5,
                                "model": {"width": 64, "dilations": [6, 12]}}
    for overrides, message in (({"lr": "fast"}, r"recipe key lr: expected float, got 'fast' \(str\)"),
                               ({"model": {"width": 1.5}}, "recipe key model.width: expected int"),
                               ({"model": {"dilations": [6, "x"]}}, r"recipe key model.dilations\[1\]: expected int"),
                               ({"resume": 1}, "recipe key resume: expected bool"),
                               ({"limit": True}, "recipe key limit: expected int or null"),
                               ({"lr_max": 1}, r"unknown config keys \['lr_max'\]")):
        with pytest.raises(ValueError, match=message) as error:
            typed_recipe(Recipe, None, overrides)
        assert "\n" not in str(error.value)
    recipe["model"] = {"width": 8, "dilations": []}  # set whole, checked like a recipe's
    assert recipe.model == Model(8, [])
    with pytest.raises(ValueError, match="recipe key loss"):
        recipe["loss"] = 3

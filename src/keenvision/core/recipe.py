"""Reading training recipes (YAML) that may build on another recipe.

A recipe may name ``base: other.yaml`` (relative to its own folder): the base is read first and the recipe's keys
are laid over it, so an ablation arm states only what it changes. Nested dicts are left for the caller to merge
(each system knows which of its keys are sections).
"""

from __future__ import annotations

from pathlib import Path

import yaml


def read_recipe_layers(path: str | Path) -> list[dict]:
    """The YAML mappings of ``path`` and its chain of ``base`` recipes, base first (``base`` keys removed)."""
    layers: list[dict] = []
    seen: set[Path] = set()
    current: Path | None = Path(path)
    while current is not None:
        resolved = current.resolve()
        if resolved in seen:
            raise ValueError(f"recipe {path} has a cycle of base recipes at {current}")
        seen.add(resolved)
        if not current.is_file():
            named_by = f" (a base of {path})" if current != Path(path) else ""
            raise ValueError(f"recipe {current}: no such file{named_by}")
        layer = yaml.safe_load(current.read_text()) or {}
        if not isinstance(layer, dict):
            raise ValueError(f"recipe {current} is not a mapping of keys to values")
        base = layer.pop("base", None)
        layers.insert(0, layer)
        current = current.parent / base if base else None
    return layers

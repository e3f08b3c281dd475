"""Reading training recipes (YAML) that may build on another recipe.

A recipe may name ``base: other.yaml`` (relative to its own folder): the base is read first and the recipe's keys
are laid over it, so an ablation arm states only what it changes. Nested dicts are left for the caller to merge
(each system knows which of its keys are sections).
"""

from __future__ import annotations

import copy
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
        try:
            layer = yaml.safe_load(current.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ValueError(f"recipe {current}: not a readable YAML recipe ({type(error).__name__})") from None
        if not isinstance(layer, dict):
            raise ValueError(f"recipe {current} is not a mapping of keys to values")
        base = layer.pop("base", None)
        layers.insert(0, layer)
        current = current.parent / base if base else None
    return layers


def _merge_layer(config: dict, layer: dict, defaults: dict, replace: frozenset[str], where: str,
                 unknown: list[str]) -> None:
    """Lay ``layer`` over ``config`` in place: sections (dicts in ``defaults``) merge key by key, dotted keys
    (``model.width``) reach into sections, other values replace; keys ``defaults`` lacks go to ``unknown``."""
    for key, value in layer.items():
        head, _, rest = str(key).partition(".")
        if rest and head in defaults and isinstance(defaults[head], dict):
            if defaults[head]:
                _merge_layer(config[head], {rest: value}, defaults[head], replace, f"{where}{head}.", unknown)
            else:  # a free mapping
                config[head] = {**(config[head] or {}), rest: copy.deepcopy(value)}
            continue
        if key not in defaults:
            unknown.append(f"{where}{key}")
            continue
        if isinstance(value, Path):
            value = str(value)  # resolved recipes are written back as YAML
        if isinstance(defaults[key], dict) and defaults[key] and not isinstance(value, dict):
            if value is None:  # "model:" left empty in a YAML file: nothing to change
                continue
            raise ValueError(f"config key {where}{key} takes a mapping of its keys "
                             f"({', '.join(sorted(defaults[key]))}), got {value!r}")
        # an empty dict in the defaults is a free mapping (e.g. a loss's options): set whole, keys unchecked
        section = (isinstance(defaults[key], dict) and defaults[key] and isinstance(value, dict)
                   and f"{where}{key}" not in replace)
        if section:
            _merge_layer(config[key], value, defaults[key], replace, f"{where}{key}.", unknown)
        else:
            config[key] = copy.deepcopy(value)


def load_recipe(path: str | Path | None, defaults: dict, overrides: dict | None = None,
                replace: tuple[str, ...] = ()) -> dict:
    """The one recipe loader of every trainer: ``defaults`` <- the YAML ``path`` and its ``base`` chain
    (`read_recipe_layers`) <- ``overrides`` (None values skipped, so a CLI passes its unset options as they are).

    A section (a dict in ``defaults``, e.g. ``model``) is merged key by key; a dotted key (``model.width: 64``,
    ``mining.pnet``) sets one key of a section; ``replace`` names sections set whole instead (``data.train``). A key
    ``defaults`` does not have is an error listing it with the valid names (``unknown config keys ['lr_max']; valid:
    ...``)."""
    config = copy.deepcopy(defaults)
    layers = read_recipe_layers(path) if path is not None else []
    layers.append({key: value for key, value in (overrides or {}).items() if value is not None})
    unknown: list[str] = []
    for layer in layers:
        _merge_layer(config, layer, defaults, frozenset(replace), "", unknown)
    if unknown:
        sections = {f"{key}.{sub}" for key, value in defaults.items() if isinstance(value, dict) for sub in value}
        raise ValueError(f"unknown config keys {sorted(set(unknown))}; valid: "
                         f"{', '.join(sorted(set(defaults) | sections))}")
    return config

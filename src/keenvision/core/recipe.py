"""Reading training recipes (YAML) that may build on another recipe.

A recipe may name ``base: other.yaml`` (relative to its own folder): the base is read first and the recipe's keys
are laid over it, so an ablation arm states only what it changes. Nested dicts are left for the caller to merge
(each system knows which of its keys are sections).

Typed recipes (`typed_recipe`): a recipe declared as dataclasses, one per section (`Section`), is read the same way
and then checked from its field types; an unknown key or a wrong type is one line naming it.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
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


# --- typed recipes ------------------------------------------------------------------------------------------------

class Section:
    """Base of a typed recipe section: a dataclass whose field types are the checks (`typed_recipe`). It also reads
    like the mapping recipes were (``config["lr"]``, ``config.get("schedule")``, ``**config["model"]``), so code
    and tests written against dict recipes keep working while new code reads attributes; ``as_dict()`` is the
    plain form (checkpoint hyperparameters, YAML, JSON). Cross-field checks go in ``__post_init__``."""

    def __getitem__(self, key: str):
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        if key not in self:
            raise KeyError(f"unknown recipe key {key!r}")
        setattr(self, key, check_value(value, typing.get_type_hints(type(self))[key], key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def keys(self) -> list[str]:
        return [item.name for item in dataclasses.fields(self)]

    def __iter__(self):
        return iter(self.keys())

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self else default

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainerSettings(Section):
    """The keys every training recipe shares, for `core.training.build_trainer`: the step budget, checkpoint and
    validation intervals, threads and Lightning's accelerator, devices, nodes and precision. A recipe subclasses it
    and redeclares a field to change its default."""

    max_steps: int = 4000
    checkpoint_every: int = 200
    val_every: int = 1000
    num_threads: int = 2
    precision: str = "auto"  # auto: 16-mixed on a GPU, 32-true on the CPU
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    resume: bool = False


def recipe_defaults(recipe_class: type[Section]) -> dict:
    """The defaults of a typed recipe as the nested dict `load_recipe` merges over."""
    return dataclasses.asdict(recipe_class())


def _describe(annotation) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(repr(argument) for argument in arguments)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(argument) for argument in arguments)
    if annotation is type(None):
        return "null"
    if dataclasses.is_dataclass(annotation):
        return "a mapping of its keys"
    return getattr(annotation, "__name__", str(annotation)) if origin is None else str(annotation)


def check_value(value, annotation, key: str):
    """``value`` checked against the type ``annotation`` (and converted where YAML is loose: an int where a float
    is asked for, a list where a tuple is); ValueError naming ``key``, the expected type and the value otherwise."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)

    def wrong() -> ValueError:
        return ValueError(f"recipe key {key}: expected {_describe(annotation)}, got {value!r} "
                          f"({type(value).__name__})")

    if annotation is typing.Any:
        return value
    if origin in (types.UnionType, typing.Union):
        for argument in arguments:
            try:
                return check_value(value, argument, key)
            except ValueError:
                continue
        raise wrong()
    if origin is typing.Literal:
        if value in arguments:
            return value
        raise wrong()
    if annotation is type(None):
        if value is None:
            return None
        raise wrong()
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise wrong()
        return build_section(annotation, value, f"{key}.")
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            raise wrong()
        item = arguments[0] if arguments else typing.Any
        items = [check_value(element, item, f"{key}[{index}]") for index, element in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise wrong()
        item = arguments[1] if len(arguments) == 2 else typing.Any
        return {name: check_value(element, item, f"{key}.{name}") for name, element in value.items()}
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise wrong()
    if annotation is int or annotation is bool or annotation is str:
        # bool is an int in Python: an int key takes no true/false, a bool key no 0/1
        if isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool)):
            return value
        raise wrong()
    raise TypeError(f"recipe key {key}: the type {annotation!r} is not one typed recipes check")


def build_section(section_class: type[Section], values: Mapping, where: str = "") -> Section:
    """``section_class`` from ``values`` (every field checked by its type, nested sections built); the keys must be
    the fields (`load_recipe` has already named unknown ones)."""
    hints = typing.get_type_hints(section_class)
    unknown = sorted(set(values) - {item.name for item in dataclasses.fields(section_class)})
    if unknown:
        raise ValueError(f"unknown config keys {[where + key for key in unknown]}")
    checked = {item.name: check_value(values[item.name], hints[item.name], where + item.name)
               for item in dataclasses.fields(section_class) if item.name in values}
    return section_class(**checked)


def typed_recipe(recipe_class: type[Section], path: str | Path | None, overrides: dict | None = None,
                 replace: tuple[str, ...] = ()) -> Section:
    """`load_recipe` with a typed recipe: its defaults come from ``recipe_class`` (a `Section` dataclass whose
    fields may be sections), the merged result is checked field by field against the types, and returned as a
    ``recipe_class``. An unknown key or a value of the wrong type is a one-line ValueError naming the key."""
    return build_section(recipe_class, load_recipe(path, recipe_defaults(recipe_class), overrides, replace))

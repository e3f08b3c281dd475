"""The one registry of shipped weights: ``keenvision/weights/registry.json``.

Each entry names a model (``farsee-camvid``), its system, its file in ``keenvision/weights/``, the file's required
SHA-256, its licence, the recipe that trained it, and one measured metric with the split it was measured on. Every
system's shipped names, `packaged_weights`' checksums, the ``--weights`` help strings, ``keen models`` and
`keenvision.load` read it; a packaged file without an entry is refused.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

REGISTRY_FILE = "registry.json"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    system: str
    file: str
    sha256: str
    licence: str
    recipe: str
    metric: dict  # {"name", "value" (None: not measured yet), "split"}
    loader: str  # "module:function" that takes the name (or a path) and returns the model

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def _entries() -> tuple[ShippedModel, ...]:
    text = (resources.files("keenvision") / "weights" / REGISTRY_FILE).read_text()
    return tuple(ShippedModel(**entry) for entry in json.loads(text))


def shipped_models(system: str | None = None) -> list[ShippedModel]:
    """Every shipped model, or those of one ``system`` (mtcnn, sicnn, farsee, engagement, diffrate)."""
    return [entry for entry in _entries() if system is None or entry.system == system]


def shipped_files(system: str) -> dict[str, str]:
    """``{name: file}`` of a system's shipped models (the mapping `resolve_weights` takes)."""
    return {entry.name: entry.file for entry in shipped_models(system)}


def expected_sha256(filename: str) -> str | None:
    """The registry's SHA-256 of a packaged file, None when the file has no entry."""
    return next((entry.sha256 for entry in _entries() if entry.file == filename), None)


def weights_help(system: str, default: str | None = None, extra: str = "a .safetensors export") -> str:
    """``--weights`` help naming the system's shipped models (the default marked) and what else it takes."""
    names = [f"{entry.name} (shipped{', the default' if entry.name == default else ''})"
             for entry in shipped_models(system)]
    return ", ".join(names + [extra])


def load(name: str):
    """The shipped model ``name`` through its system's loader, e.g. ``keenvision.load("farsee-camvid")``."""
    entry = next((entry for entry in _entries() if entry.name == name), None)
    if entry is None:
        raise ValueError(f"unknown shipped model {name!r}; shipped: {', '.join(e.name for e in _entries())}")
    module, function = entry.loader.split(":")
    loader = getattr(importlib.import_module(module), function)
    return loader(weights=name) if entry.system == "mtcnn" else loader(name)

"""Lazy public names for a system package (PEP 562): ``keen --help`` and ``import keenvision.<system>.cli`` must not
import torch, timm or Lightning (seconds), yet ``from keenvision.mtcnn import MTCNN`` keeps working.

A package's ``__init__`` ends with ``__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)``. No exported name may
also be a submodule's name: importing the submodule would set the package attribute to the module and hide the
exported object (tests/core/test_lazy.py checks every package)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]] | dict[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` whose public names are imported on first
    access, then kept in its namespace. ``exports``: submodule -> names (``".detector": ("MTCNN", "Face")``), or
    name -> submodule (``"MTCNN": ".detector"``)."""
    names = {name: module for module, defined in exports.items() for name in defined} \
        if all(isinstance(value, tuple) for value in exports.values()) else dict(exports)

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        setattr(sys.modules[package], name, value)  # later look-ups find it without __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__

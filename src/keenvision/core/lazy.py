"""Lazy public names for a system package: ``keen --help`` and ``import keenvision.<system>.cli`` must not import
torch, timm or Lightning (seconds), yet ``from keenvision.mtcnn import MTCNN`` keeps working."""

from __future__ import annotations

import importlib
import sys
import types


class _LazyPackage(types.ModuleType):
    """A package whose exported names are imported on first access (PEP 562 style).

    A name may also be a submodule's name (``keenvision.diffrate.patch`` holds the function ``patch``): importing the
    submodule makes Python set it as an attribute of the package, which would hide the function. Such a set is
    dropped here, so the attribute stays the exported object, as an eager ``from .patch import patch`` left it."""

    _exports: dict[str, str]

    def __getattr__(self, name: str) -> object:
        exports = self.__dict__.get("_exports", {})
        if name not in exports:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], self.__name__), name)
        self.__dict__[name] = value  # later look-ups skip __getattr__
        return value

    def __setattr__(self, name: str, value: object) -> None:
        exports = self.__dict__.get("_exports", {})
        if name in exports and isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            return  # the submodule of the same name: keep the exported object
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_exports", {})))


def lazy_exports(package: str, names: dict[str, str]) -> None:
    """Make ``package``'s public ``names`` (name -> submodule, e.g. ``"MTCNN": ".detector"``) import on first use.
    Call at the end of the package's ``__init__``."""
    module = sys.modules[package]
    module.__dict__["_exports"] = dict(names)
    module.__class__ = _LazyPackage

"""The system contract: every system (mtcnn, sicnn, engagement, farsee, diffrate, and any new one) declares in its
own ``<system>/system.py`` what the rest of keenvision needs from it, once, as timm's ``@register_model`` does for a
model family:

- ``commands``: adds its ``keen`` verbs (``keen detect``) and its tools (``keen mtcnn eval``); ``train`` is added
  from ``training``, so ``keen <system> train`` and ``python -m keenvision.<system>.train`` are the same command;
- ``load``: ``load(name_or_path, device=None)``, a shipped name (``keen models``) or an export's path, through the
  one weights resolver (`core.weights.open_weights`); `keenvision.load` goes through it;
- ``training``: the recipe's entry (``train(config_path, overrides) -> Path``), its checkpoint export and options;
- ``demo``: its section of ``keen demo``'s report; ``app``: its tab of ``keen app``.

Every reference is a ``"module:attribute"`` string, imported only when used: declaring costs nothing, so
``keen --help`` imports no torch. `systems` finds the declarations (every subpackage of keenvision with a
``system.py``); ``keen``, ``keen demo``, ``keen app`` and ``keen models`` loop over them. Nothing outside a
system's folder names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AppView", "System", "Training", "get_system", "reference", "register_system", "systems"]


def reference(target: str):
    """The object a ``"package.module:attribute"`` string names (imported now)."""
    module, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"{target!r}: expected 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Training:
    """How a system trains: ``run(config_path, overrides) -> Path`` writes the final export; ``export(checkpoint,
    out)`` exports a Lightning checkpoint's model (a path, or a dict of paths); ``example`` names a recipe for the
    help text. ``steps``: trained by optimiser steps (resume, max steps, DDP); False: by epochs, in one process.
    ``own_options``: the system's ``cli.train_options(parser)`` adds its own train options and
    ``cli.train_overrides(args)`` turns them into recipe overrides (a dict), or serves them and returns True."""

    run: str
    export: str | None
    example: str
    steps: bool = True
    own_options: bool = False


@dataclass(frozen=True)
class AppView:
    """One tab of ``keen app``: ``build(gr, shown)`` lays out its components inside the tab and wires its button,
    whose ``api_name`` is also an API endpoint; ``shown`` wraps a view function so its errors show as one line."""

    tab: str
    build: str


@dataclass(frozen=True)
class System:
    """One system's declaration (see the module docstring). By convention its parts live in its own modules:
    ``commands`` in ``cli.add_commands(top, tools)`` (top-level verbs on ``top``, ``keen <name> TOOL``s on
    ``tools``), its demo in ``demo.demo_section(out_dir, device) -> core.report.Section``, its app view in
    ``app.build_view`` (a tab titled ``app_tab``; None: no tab). ``order`` places it in ``keen --help``, the demo
    and the app (the order the project presents them in)."""

    name: str
    summary: str  # one line: `keen --help` beside `keen <name>`
    description: str  # `keen <name> --help`
    load: str  # load(name_or_path, device=None)
    training: Training
    app_tab: str | None = None
    order: int = 100

    @property
    def commands(self) -> str:
        return f"keenvision.{self.name}.cli:add_commands"

    @property
    def demo(self) -> str:
        return f"keenvision.{self.name}.demo:demo_section"

    @property
    def app(self) -> AppView | None:
        return None if self.app_tab is None else AppView(self.app_tab, f"keenvision.{self.name}.app:build_view")

    def train_options(self) -> tuple:
        """(``cli.train_options``, ``cli.train_overrides``) when the system has its own train options, else Nones."""
        if not self.training.own_options:
            return None, None
        return (reference(f"keenvision.{self.name}.cli:train_options"),
                reference(f"keenvision.{self.name}.cli:train_overrides"))

    def resolve(self, part: str):
        """The object behind one of this system's references (``"load"``, ``"demo"``, ``"commands"``...)."""
        return reference(getattr(self, part))


_DECLARED: dict[str, System] = {}


def register_system(system: System) -> System:
    """Record ``system`` (called once, by its ``system.py``); a second system of the same name is an error."""
    known = _DECLARED.get(system.name)
    if known is not None and known != system:
        raise ValueError(f"two systems are named {system.name!r}")
    _DECLARED[system.name] = system
    return system


def systems() -> list[System]:
    """Every declared system, in presentation order: the subpackages of keenvision that have a ``system.py``."""
    root = Path(__file__).resolve().parents[1]
    for declaration in sorted(root.glob("*/system.py")):  # found on disk: other subpackages are not imported
        importlib.import_module(f"keenvision.{declaration.parent.name}.system")
    return sorted(_DECLARED.values(), key=lambda system: (system.order, system.name))


def get_system(name: str) -> System:
    """The declared system ``name``; ValueError naming the declared ones otherwise."""
    found = {system.name: system for system in systems()}
    if name not in found:
        raise ValueError(f"no system named {name!r}; declared: {', '.join(found)}")
    return found[name]

"""The system contract: every declared system provides what `keen`, the demo, the app, `keen models` and
`python -m keenvision.<system>.train` loop over, and the packages stay importable without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from keenvision.core.system import get_system, reference, systems

SOURCE = Path(__file__).resolve().parents[2] / "src" / "keenvision"


def test_every_system_declares_its_parts():
    declared = systems()
    assert [system.name for system in declared] == ["mtcnn", "sicnn", "engagement", "farsee", "diffrate"]
    for system in declared:
        for part in ("commands", "load", "demo"):
            assert callable(system.resolve(part)), (system.name, part)
        assert callable(reference(system.app.build)) and callable(reference(system.training.run))
        if system.training.export:
            assert callable(reference(system.training.export))
    with pytest.raises(ValueError, match="no system named 'nope'"):
        get_system("nope")


def test_keen_models_lists_only_declared_systems():
    from keenvision.core.registry import shipped_models

    assert {entry.system for entry in shipped_models()} <= {system.name for system in systems()}


def test_exported_names_are_not_submodule_names():
    """A lazily exported name that is also a submodule would be replaced by the module once it is imported."""
    for init in SOURCE.glob("**/__init__.py"):
        tree = ast.parse(init.read_text())
        exports = next((ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                        and getattr(node.targets[0], "id", None) == "_EXPORTS"), {})
        exports = {name for names in exports.values() for name in names} \
            if all(isinstance(names, tuple) for names in exports.values()) else set(exports)
        modules = {path.stem for path in init.parent.glob("*.py")} | {path.name for path in init.parent.iterdir()
                                                                      if (path / "__init__.py").is_file()}
        assert not exports & modules, init


@pytest.mark.parametrize("system", ["mtcnn", "engagement", "diffrate"])
def test_python_m_train_is_keen_train(system):
    shown = subprocess.run([sys.executable, "-m", f"keenvision.{system}.train", "--help"], capture_output=True,
                           text=True, check=True).stdout
    assert "--config" in shown and "--threads" in shown
    assert ("--export" in shown) == (get_system(system).training.export is not None)

"""mkdocs hooks: pages that must follow the code are generated from it at build time, never copied by hand.

- ``<!-- shipped-models -->`` becomes the table of ``src/keenvision/weights/registry.json`` (what ``keen models``
  prints), so the site lists exactly the weights that ship.
- ``<!-- api: keenvision.<system> -->`` becomes one mkdocstrings entry per public name of that package, read from
  its ``_EXPORTS`` (the lazy-import table in ``__init__.py``), so the reference is the public API, no more, no less.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "src"
API_MARKER = re.compile(r"<!-- api: ([\w.]+) -->")


def public_names(package: str) -> list[tuple[str, str]]:
    """(name, module) for each name of a package's ``_EXPORTS`` dict (submodule -> names), in its order, without
    importing it."""
    init = SOURCE.joinpath(*package.split(".")) / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            exports = ast.literal_eval(node.value)
            if not all(isinstance(names, tuple) for names in exports.values()):  # the name -> submodule form
                return [(name, package + module) for name, module in exports.items()]
            return [(name, package + module) for module, names in exports.items() for name in names]
    raise ValueError(f"{init} has no _EXPORTS table")


def api_section(package: str) -> str:
    return "\n\n".join(f"::: {module}.{name}" for name, module in public_names(package))


def models_table() -> str:
    entries = json.loads((SOURCE / "keenvision" / "weights" / "registry.json").read_text())
    rows = ["| name | system | measured | on | licence | recipe |", "|---|---|---|---|---|---|"]
    for entry in entries:
        metric = entry["metric"]
        value = "-" if metric["value"] is None else f"{metric['value']:g}"
        rows.append(f"| `{entry['name']}` | {entry['system']} | {metric['name']} {value} | {metric['split']} | "
                    f"{entry['licence']} | `{entry['recipe']}` |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    markdown = markdown.replace("<!-- shipped-models -->", models_table())
    return API_MARKER.sub(lambda match: api_section(match.group(1)), markdown)

"""The docs site and the README cover every page: a page missing from mkdocs' nav or from the README is a page
nobody finds (mkdocs --strict, run by `make test`, checks the links inside the site)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _nav_pages(node) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(_nav_pages(value) for value in node.values()))
    return set().union(*(_nav_pages(item) for item in node))


def test_every_page_is_in_the_nav_and_the_readme():
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    assert _nav_pages(config["nav"]) == pages
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)\)", (ROOT / "README.md").read_text()))
    assert pages - linked == set()


def test_api_pages_list_the_public_names():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    import keenvision.mtcnn

    names = [name for name, _ in hooks.public_names("keenvision.mtcnn")]
    assert sorted(names) == sorted(keenvision.mtcnn.__all__)
    assert "::: keenvision.mtcnn.detector.MTCNN" in hooks.api_section("keenvision.mtcnn")
    table = hooks.models_table()
    from keenvision.core.registry import shipped_models

    for entry in shipped_models():
        assert f"`{entry.name}`" in table

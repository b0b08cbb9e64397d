"""Serving reads the store in one place only: serving/source.py, where a served version is assembled."""

from __future__ import annotations

import ast
from pathlib import Path

import kgserver.serving


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_source_imports_the_store() -> None:
    package = Path(kgserver.serving.__file__).parent
    importers = sorted(
        path.name
        for path in package.glob("*.py")
        if any(name == "kgserver.store" or name.startswith("kgserver.store.") for name in _imported_modules(path))
    )
    assert importers == ["source.py"]

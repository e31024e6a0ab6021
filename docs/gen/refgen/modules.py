"""The source tree (``streams/``, ``processors/``) → one row per module: its docstring's summary.

Read with ``ast``, without importing anything, so the page lists every module,
including those whose optional dependencies are not installed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from refgen.markdown import code, escape, table


@dataclass(frozen=True)
class ModuleRow:
    """One module or package of the tree."""

    path: str  # relative to the project root, e.g. "streams/runtime/runner.py"
    depth: int  # 0 for a top-level package
    summary: str


def summary(source: str) -> str:
    """The first line of a module's docstring (empty when it has none)."""
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def module_rows(root: Path, package: str) -> list[ModuleRow]:
    """Every package and module under ``root/package``, packages before their modules."""
    rows = []
    base = root / package
    paths = sorted(
        base.rglob("*.py"),
        key=lambda p: (p.parent.relative_to(base).parts, p.name != "__init__.py", p.name),
    )
    for path in paths:
        relative = path.relative_to(root)
        is_package = path.name == "__init__.py"
        shown = relative.parent if is_package else relative
        depth = len(shown.parts) - 1
        text = summary(path.read_text(encoding="utf-8"))
        rows.append(ModuleRow(f"{shown.as_posix()}{'/' if is_package else ''}", depth, text))
    return rows


def render(rows: list[ModuleRow]) -> str:
    """A table of the tree, one row per module, indented by depth."""
    cells = [("\u2003" * row.depth + code(row.path), escape(row.summary)) for row in rows]
    return table(("module", "what it is"), cells)

"""The dependency rule: every import in ``streams/`` and ``processors/`` points down.

    cli
     → processors, stack, sdk, gateway
     → warehouse, llm, profiling
     → runtime → contracts → settings, errors

A component may import only the components listed for it in ``ALLOWED``: those
below it (and the local stack may use the SDK's Connect client and the model
catalog); processors never import the local stack or the CLI, nor each other.
The table is the architecture: changing it is a design decision, so it lives
here, beside the test that enforces it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

_BASE = {"settings", "errors"}
#: component -> the components it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "package": {"errors", "settings"},  # streams/__init__.py
    "errors": set(),
    "settings": {"errors"},
    "contracts": _BASE,
    "runtime": {"contracts", *_BASE},
    "warehouse": {"runtime", "contracts", *_BASE},
    "llm": {"runtime", "contracts", *_BASE},
    "profiling": {"runtime", "contracts", *_BASE},
    "sdk": {"runtime", "contracts", *_BASE},
    "stack": {"sdk", "llm", "runtime", "contracts", *_BASE},
    "processors": {"warehouse", "llm", "profiling", "runtime", "contracts", *_BASE},
    # The OpenAI-compatible gateway: a producer and consumer like the SDK, plus the model
    # catalog (its /v1/models and request checks); the pipeline never imports it.
    "gateway": {"llm", "runtime", "contracts", *_BASE},
    "cli": {
        "processors",
        "stack",
        "sdk",
        "gateway",
        "warehouse",
        "llm",
        "profiling",
        "runtime",
        "contracts",
    }
    | _BASE,
}


def component_of(module: str) -> str | None:
    """The component a dotted module name belongs to, or None outside Sluice."""
    parts = module.split(".")
    if parts[0] == "processors":
        return "processors"
    if parts[0] != "streams":
        return None
    if len(parts) == 1:
        return "package"
    return "cli" if parts[1] == "__main__" else parts[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, with its line; imports inside functions included."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target in ("streams", "processors"):  # ``from streams import runtime``
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def violations(root: Path) -> list[str]:
    """Each import under ``root`` that the table does not allow, as ``path:line: why``."""
    found = []
    paths = sorted(
        [*root.joinpath("streams").rglob("*.py"), *root.joinpath("processors").rglob("*.py")]
    )
    for path in paths:
        where = path.relative_to(root)
        own = component_of(module_name(path, root))
        if own not in ALLOWED:
            found.append(f"{where}: component {own!r} is not in the table")
            continue
        own_processor = (
            where.parts[1] if where.parts[0] == "processors" and len(where.parts) > 2 else None
        )
        for line, target in imports_of(path, root):
            other = component_of(target)
            segments = target.split(".")
            if (
                own_processor
                and other == "processors"
                and len(segments) > 1
                and segments[1] != own_processor
            ):
                found.append(f"{where}:{line}: processor {own_processor} imports {target}")
            elif other is not None and other != own and other not in ALLOWED[own]:
                found.append(f"{where}:{line}: {own} imports {target} ({other})")
    return found


def test_imports_point_down_the_layers() -> None:
    found = violations(ROOT)
    assert not found, "imports against the dependency rule:\n" + "\n".join(found)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"streams/contracts/serde.py": "from streams.runtime import kafka\n"},
            "contracts imports",
        ),
        (
            {"streams/runtime/x.py": "def f():\n    from streams.cli import main\n"},
            "runtime imports",
        ),
        ({"processors/infer/p.py": "from streams.stack.triton import x\n"}, "processors imports"),
        ({"processors/infer/p.py": "from processors.guard import engine\n"}, "processor infer"),
        (
            {
                "streams/contracts/__init__.py": "",
                "streams/contracts/a.py": "from ..runtime import b\n",
            },
            "contracts imports streams.runtime",
        ),
        ({"streams/newthing/a.py": ""}, "not in the table"),
    ],
)
def test_the_checker_reports_what_breaks_the_rule(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    found = violations(_tree(tmp_path, files))
    assert len(found) == 1 and expected in found[0], found


def test_the_checker_accepts_imports_that_point_down(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "streams/cli/run.py": "import processors\nfrom streams.runtime.runner import Runner\n",
            "processors/guard/engine.py": (
                "from processors.guard import pii\nfrom streams.llm import budgets\n"
            ),
            "streams/runtime/runner.py": (
                "from streams.contracts import serde\nfrom streams import errors\n"
            ),
        },
    )
    assert violations(root) == []

"""Every command in the tutorials and how-to guides is one the real CLI accepts.

Lines starting with ``sluice`` are parsed against the click application (no
command runs); other lines must start with a known program or one of the
repository's scripts. Blocks that cannot be checked are marked illustrative.
``tests/integration/test_tutorials.py`` runs the first tutorial for real.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import click
import pytest

from streams.cli import main
from tests.support.doc_commands import (
    ROOT,
    Block,
    Command,
    blocks,
    check,
    check_sluice,
    commands,
    page_commands,
)

PAGES = sorted([*ROOT.glob("docs/tutorials/*.md"), *ROOT.glob("docs/how-to/*.md")])
CHECKED = [c for page in PAGES for c in page_commands(page)]


@pytest.fixture(autouse=True)
def _at_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in the docs are relative to the checkout, as in a reader's shell."""
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize(
    "command", CHECKED, ids=[f"{c.block.where}:{' '.join(c.argv[:4])}" for c in CHECKED]
)
def test_every_documented_command_parses(command: Command) -> None:
    assert check(main, command) is None, check(main, command)


def test_the_pages_have_commands_to_check() -> None:
    assert PAGES, "no tutorials or how-to guides found"
    first = page_commands(ROOT / "docs/tutorials/first-pipeline.md")
    assert {c.argv[1] for c in first if c.argv[0] == "sluice"} >= {
        "up",
        "schemas",
        "produce",
        "sql",
    }
    assert len(CHECKED) > 50


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SNIPPETS = [
    (page, number, match.group(1))
    for page in [*PAGES, ROOT / "README.md"]
    for number, match in enumerate(PYTHON_BLOCK.finditer(page.read_text(encoding="utf-8")))
]


@pytest.mark.parametrize(
    ("page", "number", "source"),
    SNIPPETS,
    ids=[f"{p.relative_to(ROOT)}#{n}" for p, n, _ in SNIPPETS],
)
def test_python_snippets_parse_and_import_what_exists(page: Path, number: int, source: str) -> None:
    """Every Python block parses, and what it imports from ``streams`` exists."""
    tree = ast.parse(source, f"{page}#{number}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streams"):
            module = importlib.import_module(node.module or "")
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{node.module} has no {missing}"


# -- the checker itself --------------------------------------------------------------------
@click.group()
def app() -> None:
    """A stand-in CLI."""


@app.group()
def dlq() -> None:
    """Dead letters."""


@dlq.command()
@click.argument("topic")
@click.option("--limit", type=int, default=20)
def show(topic: str, limit: int) -> None:
    """Show."""


@app.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table")
@click.option("--dry-run", is_flag=True)
def load(file: str, fmt: str, dry_run: bool) -> None:
    """Load."""


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["dlq", "show", "raw.x", "--limit", "5"], None),
        (["load", "pyproject.toml", "--format", "csv", "--dry-run"], None),
        (["dlq", "shw", "raw.x"], "has no command 'shw'"),
        (["nope"], "has no command 'nope'"),
        (["dlq"], "needs a subcommand"),
        (["dlq", "show", "raw.x", "--limitt", "5"], "unknown options"),
        (["dlq", "show", "raw.x", "extra"], "extra arguments"),
        (["dlq", "show", "raw.x", "--limit", "many"], "invalid value for --limit"),
        (["dlq", "show"], "missing TOPIC"),
        (["load", "no-such-file.jsonl"], "invalid value for FILE"),
        (["load", "pyproject.toml", "--format", "xml"], "invalid value for --format"),
    ],
)
def test_the_checker_finds_what_would_not_parse(args: list[str], problem: str | None) -> None:
    found = check_sluice(app, args)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_blocks_commands_and_illustrative_marks(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(
        """# Page

```bash
sluice up --only kafka   # a comment
SLUICE_X=1 sluice dlq show raw.support_tickets \\
    --limit 5 && sluice status
export S=$(python3 -c 'print("x)")') ; sluice run validate &
```

```console
$ sluice sql "SELECT 1"
+---+
| 1 |
```

<!-- illustrative: needs Docker -->
```bash
docker compose up -d
```

```bash title="illustrative"
kubectl apply -f x.yaml
```

```python
print("not a shell block")
```
"""
    )
    found = blocks(path)
    argvs = [c.argv for b in found for c in commands(b)]
    assert [b.illustrative for b in found] == [False, False, True, True]
    assert argvs[:6] == [
        ("sluice", "up", "--only", "kafka"),
        ("sluice", "dlq", "show", "raw.support_tickets", "--limit", "5"),
        ("sluice", "status"),
        ("export", "S=SUBSTITUTED"),
        ("sluice", "run", "validate"),
        ("sluice", "sql", "SELECT 1"),
    ]
    assert [c.argv[0] for c in page_commands(path)] == [
        *["sluice"] * 3,
        "export",
        "sluice",
        "sluice",
    ]


def test_an_unknown_program_in_a_checked_block_fails() -> None:
    block = Block(ROOT / "docs/index.md", 1, "bash", False, "docker compose up -d")
    (command,) = commands(block)
    problem = check(main, command)
    assert problem is not None and "unknown program 'docker'" in problem
    script = Block(ROOT / "docs/index.md", 1, "bash", False, "infra/local/demo.sh --rows 10")
    assert check(main, commands(script)[0]) is None

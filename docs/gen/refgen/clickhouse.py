"""ClickHouse migrations and shipped queries → tables, views and their columns.

A small reader of the DDL Sluice writes, not a SQL parser: it finds each
``CREATE TABLE`` / ``CREATE MATERIALIZED VIEW`` statement, the ``--`` comment
right above it, the column list (names, types, ``COMMENT``s) and the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from refgen.markdown import code, escape, one_line, table

_CREATE = re.compile(
    r"CREATE\s+(?P<what>TABLE|MATERIALIZED\s+VIEW|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[\w.]+)",
    re.IGNORECASE,
)
_COLUMN_END = re.compile(
    r"\s(DEFAULT|MATERIALIZED|ALIAS|EPHEMERAL|CODEC|COMMENT|TTL|PRIMARY\s+KEY)\b", re.IGNORECASE
)
_COMMENT = re.compile(r"\bCOMMENT\s+'((?:[^'\\]|\\.)*)'", re.IGNORECASE)
_NOT_COLUMNS = ("INDEX ", "PROJECTION ", "CONSTRAINT ")


@dataclass(frozen=True)
class Column:
    """One column of a table."""

    name: str
    type: str
    comment: str


@dataclass(frozen=True)
class Relation:
    """A table or a view created by a migration."""

    name: str
    kind: str  # "table", "materialized view" or "view"
    engine: str
    comment: str
    columns: list[Column]
    migration: str
    target: str = ""  # TO <table> of a materialized view
    refresh: str = ""  # REFRESH clause of a refreshable view
    definition: str = ""  # the statement of a view (its SELECT says what it holds)


def strip_line_comment(line: str) -> str:
    """``line`` without a trailing ``-- comment`` (outside quotes)."""
    quoted = False
    for index, char in enumerate(line):
        if char == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", index):
            return line[:index]
    return line


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """``text`` split on ``separator`` outside parentheses and quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _balanced(text: str, start: int) -> tuple[str, int]:
    """The text inside the parentheses opening at ``start``, and the index after them."""
    depth, quoted = 0, False
    for index in range(start, len(text)):
        char = text[index]
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index], index + 1
    raise ValueError("unbalanced parentheses")


def parse_column(definition: str) -> Column | None:
    """A column definition (``name Type [DEFAULT ...] [COMMENT '...']``), or None for an index."""
    text = " ".join(definition.split())
    if text.upper().startswith(_NOT_COLUMNS):
        return None
    name, _, rest = text.partition(" ")
    end = _COLUMN_END.search(rest)
    type_ = rest[: end.start()] if end else rest
    comment = _COMMENT.search(rest)
    return Column(name.strip("`"), type_.strip(), comment.group(1) if comment else "")


def leading_comment(lines: list[str]) -> str:
    """The ``--`` comment lines directly above a statement (no blank line between), joined."""
    block: list[str] = []
    for line in reversed(lines):
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        block.insert(0, stripped.removeprefix("--").strip())
    return one_line(" ".join(block))


def parse_migration(sql: str, migration: str) -> list[Relation]:
    """Every table and view that one migration file creates, in file order."""
    found = []
    for match in _CREATE.finditer(sql):
        before = sql[: match.start()].splitlines()
        body = "\n".join(strip_line_comment(line) for line in sql[match.end() :].splitlines())
        statement = body[: len(body) - len(body.lstrip())] + split_top_level(body, ";")[0]
        kind = " ".join(match.group("what").lower().split())
        columns: list[Column] = []
        head = statement
        if kind == "table" and statement.lstrip().startswith("("):
            inside, after = _balanced(statement, statement.index("("))
            columns = [c for c in map(parse_column, split_top_level(inside)) if c is not None]
            head = statement[after:]
        engine = re.search(r"\bENGINE\s*=\s*(\w+(?:\([^)]*\))?)", head)
        target = re.search(r"\bTO\s+([\w.]+)", head)
        refresh = re.search(r"\bREFRESH\s+(.+?)\s*$", head, re.MULTILINE)
        found.append(
            Relation(
                name=match.group("name"),
                kind=kind,
                engine=engine.group(1) if engine else "",
                comment=leading_comment(before),
                columns=columns,
                migration=migration,
                target=target.group(1) if target and kind != "table" else "",
                refresh=refresh.group(1) if refresh else "",
                definition="" if kind == "table" else f"{match.group(0)}{statement}",
            )
        )
    return found


def query_comment(sql: str) -> str:
    """The leading ``--`` comment of a query file."""
    lines = []
    for line in sql.splitlines():
        if not line.strip().startswith("--"):
            break
        lines.append(line.strip().removeprefix("--").strip())
    return one_line(" ".join(lines))


def relations(migrations: Path) -> list[Relation]:
    """Every relation of every ``NNNN_name.sql`` under ``migrations``, in migration order."""
    return [
        relation
        for path in sorted(migrations.glob("*.sql"))
        for relation in parse_migration(path.read_text(encoding="utf-8"), path.name)
    ]


def render_relation(relation: Relation) -> str:
    """One table or view as a section."""
    text = f"### {relation.name}\n\n"
    facts = [f"{relation.kind}, migration `{relation.migration}`"]
    if relation.engine:
        facts.append(f"engine `{relation.engine}`")
    if relation.target:
        facts.append(f"writes to `{relation.target}`")
    if relation.refresh:
        facts.append(f"refresh `{relation.refresh}`")
    text += "; ".join(facts) + ".\n\n"
    if relation.comment:
        text += escape(relation.comment) + "\n\n"
    if relation.columns:
        rows = [(code(c.name), code(c.type), escape(c.comment)) for c in relation.columns]
        text += table(("column", "type", "comment"), rows) + "\n"
    if relation.definition:
        text += f"```sql\n{relation.definition}\n```\n\n"
    return text


def render_queries(queries: Path) -> str:
    """The table of shipped queries with their leading comments."""
    rows = [
        (f"`{path.name}`", escape(query_comment(path.read_text(encoding="utf-8"))))
        for path in sorted(queries.glob("*.sql"))
    ]
    return table(("file", "what it answers"), rows)

"""`sluice sql` on rows a hostile producer wrote: values are printed, never obeyed.

A tenant id such as ``[/bold]`` is rich markup (a closing tag with nothing open, which
made rich fail), and ``\\x1b[2J`` clears the operator's screen: whatever the rows hold
must come out as the characters they are, control characters visibly escaped.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.cli import sql as sql_cli
from streams.warehouse import clickhouse

HOSTILE = ["[/bold]", "[red]x[/red]", "\x1b[2J", "over\rwrite", "[bold]open"]


@pytest.fixture
def hostile_rows(settings, monkeypatch):
    """A table in Sluice's embedded database whose tenant ids are markup and escapes."""
    bootstrap = clickhouse.open_warehouse(settings)
    clickhouse.ensure_database(bootstrap, "sluice")
    bootstrap.close()
    db = clickhouse.open_warehouse(settings, database="sluice")
    try:
        db.command("CREATE TABLE tenants (n UInt8, tenant String) ENGINE = MergeTree ORDER BY n")
        values = ", ".join(f"({i}, {_quoted(v)})" for i, v in enumerate(HOSTILE))
        db.command(f"INSERT INTO tenants VALUES {values}")
    finally:
        db.close()
    monkeypatch.setattr(sql_cli, "get_settings", lambda: settings)


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + escaped.replace("\x1b", "\\x1b").replace("\r", "\\r") + "'"


def run_sql(*args: str):
    result = CliRunner().invoke(main, ["sql", "SELECT n, tenant FROM tenants ORDER BY n", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.usefixtures("hostile_rows")
def test_a_table_prints_markup_as_text_and_escapes_control_characters():
    output = run_sql()
    for shown in ("[/bold]", "[red]x[/red]", "[bold]open", "\\x1b[2J", "over\\x0dwrite"):
        assert shown in output
    assert "\x1b" not in output, "no escape sequence reaches the terminal"
    assert "\r" not in output
    assert "5 rows" in output


@pytest.mark.usefixtures("hostile_rows")
def test_json_and_csv_keep_the_values_exact():
    rows = json.loads(run_sql("--format", "json"))
    assert [row["tenant"] for row in rows] == HOSTILE  # JSON escapes control characters
    assert "\x1b" not in run_sql("--format", "json")
    csv = run_sql("--format", "csv")  # not a terminal here: the bytes ClickHouse holds
    assert "[/bold]" in csv and "\x1b[2J" in csv

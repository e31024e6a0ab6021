"""``sluice sql`` and ``sluice db migrate``: ClickHouse from the command line."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click
from rich.table import Table

from streams.cli import console
from streams.cli.output import cell, plain
from streams.settings import Settings, get_settings
from streams.warehouse import clickhouse, migrations

MIGRATIONS = Path("infra/clickhouse/migrations")


def warehouse(settings: Settings) -> clickhouse.Warehouse:
    """Sluice's database (direct, or through the sink that owns an embedded one)."""
    database = settings.clickhouse.database
    try:
        bootstrap = clickhouse.open_warehouse(settings)
        clickhouse.ensure_database(bootstrap, database)
        bootstrap.close()
        return clickhouse.open_warehouse(settings, database=database)
    except ImportError as exc:
        raise clickhouse.WarehouseError(
            f"{exc}. Install the ClickHouse client: pip install 'sluice[sink]'"
        ) from exc


@click.command()
@click.argument("query", required=False)
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def sql(query: str | None, path: Path | None, fmt: str) -> None:
    """Run QUERY (or the SQL in --file) on Sluice's ClickHouse database and print the rows.

    Works while the sink runs: with the embedded engine, the query goes through it.
    Examples: sluice sql "SELECT * FROM cost_per_tenant_day"; sluice sql -f
    infra/clickhouse/queries/top_dlq_reasons.sql --format csv
    """
    text = path.read_text(encoding="utf-8") if path else query
    if not text or not text.strip():
        raise click.UsageError("give a QUERY or --file")
    text = text.strip().rstrip(";")
    settings = get_settings()
    db = warehouse(settings)
    try:
        result = db.query(text)
    except clickhouse.WarehouseError as exc:
        if "UNKNOWN_TABLE" in str(exc):
            raise clickhouse.WarehouseError(
                f"{exc}\nSluice's tables are created by `sluice db migrate` (the sink also "
                "applies the migrations when it starts)."
            ) from exc
        raise
    finally:
        db.close()
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(result.columns)
        writer.writerows([[_text(v) for v in row] for row in result.rows])
        text = buffer.getvalue()
        # On a terminal, a value's control characters are shown, not obeyed; a pipe or
        # a file gets the values exactly as ClickHouse holds them.
        sys.stdout.write(plain(text, multiline=True) if sys.stdout.isatty() else text)
    elif fmt == "json":
        rows = [
            {c: _json(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        # Values are data, never markup or terminal control: every cell is a Text.
        table = Table(caption=cell(f"{len(result.rows)} rows · {db.description}"))
        for column, type_name in zip(result.columns, result.types, strict=True):
            numeric = type_name.startswith(("Int", "UInt", "Float", "Decimal", "Nullable(Int"))
            table.add_column(cell(column), justify="right" if numeric else "left")
        for row in result.rows:
            table.add_row(*(cell(_text(v)) for v in row))
        console.print(table)


def _text(value: object) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()  # type: ignore[no-any-return]
    return str(value)


def _json(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return _text(value)  # Decimal as a string: exact


@click.group()
def db() -> None:
    """Sluice's ClickHouse database."""


@db.command()
def migrate() -> None:
    """Apply the pending migrations of infra/clickhouse/migrations (idempotent)."""
    settings = get_settings()
    target = warehouse(settings)
    try:
        outcomes = migrations.migrate(target, settings.project_root / MIGRATIONS)
    finally:
        target.close()
    table = Table(title=cell(f"migrations · {target.description}"))
    table.add_column("version")
    table.add_column("name")
    table.add_column("state")
    for outcome in outcomes:
        table.add_row(f"{outcome.version:04d}", cell(outcome.name), outcome.action)
    console.print(table)


COMMANDS = [sql, db]

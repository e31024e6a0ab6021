"""ClickHouse TTLs from the topic catalog's data classes (pure).

Every table the sink loads has a data class: the one ``schemas/topics.yaml`` gives it
under ``tables:``, or else that of the topics it is loaded from (which must agree).
The class's ``clickhouse_ttl_days`` is the table's TTL, counted from the table's
event-time column (the one it is partitioned by).

TTLs live in versioned migrations like every other schema change: ``ttl_statements``
is what the newest migration that sets TTLs must say, and the unit tests compare the
TTL each table ends with after all migrations (``migrated_ttls``) with the catalog, so
a change of a class's TTL in the catalog fails the tests until a new migration
carries it (the test's message lists the statements to put in it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from streams.contracts.catalog import Catalog, CatalogError
from streams.warehouse.tables import table_for

#: table → the event-time column its TTL counts from (its partition key's column).
TIME_COLUMNS: dict[str, str] = {
    "requests": "created_at",
    "results": "completed_at",
    "usage": "completed_at",
    "usage_windows": "window_start",
    "budget_status": "period_start",
    "budget_alerts": "period_start",
    "pii_findings": "ts",
    "audit_events": "occurred_at",
    "dead_letters": "ts",
    "drift_alerts": "ts",
    "drift_profiles": "created_at",
    "otel_traces": "Timestamp",
}


@dataclass(frozen=True)
class TableTtl:
    """The TTL one table gets from its data class."""

    table: str
    data_class: str
    column: str
    days: int

    @property
    def expression(self) -> str:
        """The TTL expression as a migration writes it."""
        return f"toDateTime({self.column}) + INTERVAL {self.days} DAY"

    @property
    def statement(self) -> str:
        """The idempotent statement that sets it (re-running it changes nothing)."""
        return f"ALTER TABLE {self.table} MODIFY TTL {self.expression}"


def table_classes(catalog: Catalog) -> dict[str, str]:
    """Table → data class, for every table the sink loads from ``catalog``'s topics."""
    by_table: dict[str, set[str]] = {}
    for name, spec in catalog.topics.items():
        loaded = table_for(name)
        if loaded is not None:
            by_table.setdefault(loaded.table, set()).add(spec.data_class)
    classes = {}
    for table, found in sorted(by_table.items()):
        declared = catalog.tables.get(table)
        if declared is not None:
            classes[table] = declared
        elif len(found) == 1:
            classes[table] = found.pop()
        else:
            raise CatalogError(
                f"ClickHouse table {table!r} is loaded from topics of the data classes "
                f"{', '.join(sorted(found))}; declare its own class under `tables:` in "
                "schemas/topics.yaml"
            )
    unknown = sorted(set(catalog.tables) - set(by_table))
    if unknown:
        raise CatalogError(
            f"`tables:` in schemas/topics.yaml names {', '.join(unknown)}, which the sink "
            f"does not load; it loads {', '.join(sorted(by_table))}"
        )
    return classes


def table_ttls(catalog: Catalog) -> list[TableTtl]:
    """The TTL of every table the sink loads, by table name."""
    ttls = []
    for table, name in table_classes(catalog).items():
        days = catalog.data_class(name).clickhouse_ttl_days
        if days is None:
            raise CatalogError(
                f"ClickHouse table {table!r} is of the data class {name!r}, which declares "
                "no `clickhouse_ttl_days`; add one in schemas/topics.yaml"
            )
        ttls.append(TableTtl(table, name, TIME_COLUMNS[table], days))
    return ttls


def ttl_statements(catalog: Catalog) -> list[str]:
    """What a migration that brings every table to its class's TTL says."""
    return [ttl.statement for ttl in table_ttls(catalog)]


_CREATE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)\b.*?^TTL (.+?)$", re.S | re.M)
_MODIFY = re.compile(r"ALTER TABLE (\w+) MODIFY TTL (.+)", re.S)


def migrated_ttls(statements: Iterable[str]) -> dict[str, str]:
    """Table → the TTL expression it has after ``statements`` (migrations, in order)."""
    ttls: dict[str, str] = {}
    for statement in statements:
        text = statement.strip()
        modify = _MODIFY.fullmatch(text)
        if modify:
            ttls[modify.group(1)] = " ".join(modify.group(2).split())
            continue
        create = _CREATE.search(text)
        if create and text.startswith("CREATE TABLE"):
            ttls.setdefault(create.group(1), " ".join(create.group(2).split()))
    return ttls

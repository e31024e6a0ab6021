"""ClickHouse TTLs come from the catalog's data classes, and the migrations carry them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from streams.contracts.catalog import CatalogError, load_catalog
from streams.settings import PROJECT_ROOT, Settings
from streams.warehouse import clickhouse, migrations
from streams.warehouse.retention import (
    TIME_COLUMNS,
    migrated_ttls,
    table_classes,
    table_ttls,
    ttl_statements,
)
from streams.warehouse.tables import BY_TOPIC, DEAD_LETTERS

SCHEMAS = PROJECT_ROOT / "schemas"
MIGRATIONS = PROJECT_ROOT / "infra" / "clickhouse" / "migrations"
CATALOG = load_catalog(SCHEMAS)
SINK_TABLES = {spec.table for spec in BY_TOPIC.values()} | {DEAD_LETTERS.table}


def test_every_table_the_sink_loads_has_a_class_with_a_ttl():
    ttls = {t.table: t for t in table_ttls(CATALOG)}
    assert set(ttls) == SINK_TABLES == set(TIME_COLUMNS)
    for ttl in ttls.values():
        assert ttl.days == CATALOG.data_class(ttl.data_class).clickhouse_ttl_days


def test_tables_take_the_class_of_their_topics_unless_they_declare_one():
    classes = table_classes(CATALOG)
    assert classes["pii_findings"] == CATALOG.topic("pii.findings").data_class == "audit"
    assert classes["audit_events"] == CATALOG.topic("audit.events").data_class == "audit"
    assert classes["otel_traces"] == "telemetry"
    assert classes["usage"] == "metrics"
    # Loaded from raw and redacted prompts, but holding no text: a class of their own.
    assert classes["requests"] == classes["results"] == "request_metadata"
    assert classes["dead_letters"] == "dead_letter"


def test_the_ddl_of_each_table_has_the_ttl_of_its_class():
    statements = dict(zip(sorted(SINK_TABLES), ttl_statements(CATALOG), strict=True))
    for table, statement in statements.items():
        days = CATALOG.data_class(table_classes(CATALOG)[table]).clickhouse_ttl_days
        assert statement == (
            f"ALTER TABLE {table} MODIFY TTL toDateTime({TIME_COLUMNS[table]}) "
            f"+ INTERVAL {days} DAY"
        )


def test_the_migrations_leave_every_table_with_the_ttl_of_its_class():
    statements = [s for m in migrations.discover(MIGRATIONS) for s in m.statements()]
    have = migrated_ttls(statements)
    stale = [t.statement + ";" for t in table_ttls(CATALOG) if have.get(t.table) != t.expression]
    assert not stale, (
        "schemas/topics.yaml declares other ClickHouse TTLs than the migrations set; add a new "
        "migration (never edit an applied one) with:\n" + "\n".join(stale)
    )


def test_migrated_ttls_reads_create_and_alter():
    got = migrated_ttls(
        [
            "CREATE TABLE IF NOT EXISTS a\n(\n x DateTime\n)\nENGINE = MergeTree\nORDER BY x\n"
            "TTL x + INTERVAL 1 DAY\nSETTINGS ttl_only_drop_parts = 1",
            "CREATE TABLE b (x DateTime) ENGINE = MergeTree ORDER BY x",
            "ALTER TABLE a MODIFY TTL toDateTime(x) + INTERVAL 2 DAY",
        ]
    )
    assert got == {"a": "toDateTime(x) + INTERVAL 2 DAY"}


def _edited(tmp_path: Path, change) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    topics = yaml.safe_load((target / "topics.yaml").read_text())
    change(topics)
    (target / "topics.yaml").write_text(yaml.safe_dump(topics))
    return target


def test_a_table_of_mixed_classes_must_declare_its_own(tmp_path):
    catalog = load_catalog(_edited(tmp_path, lambda t: t["tables"].pop("requests")))
    with pytest.raises(CatalogError, match=r"'requests' is loaded from topics of the data classes"):
        table_classes(catalog)


def test_a_table_class_without_a_ttl_is_refused(tmp_path):
    catalog = load_catalog(
        _edited(tmp_path, lambda t: t["data_classes"]["audit"].pop("clickhouse_ttl_days"))
    )
    with pytest.raises(CatalogError, match=r"'audit_events' is of the data class 'audit'"):
        table_ttls(catalog)


def test_a_declared_table_the_sink_does_not_load_is_refused(tmp_path):
    catalog = load_catalog(_edited(tmp_path, lambda t: t["tables"].update(nope="audit")))
    with pytest.raises(CatalogError, match="names nope, which the sink does not load"):
        table_classes(catalog)


def _ttl_of(create_table_query: str) -> str:
    found = re.search(r"\bTTL (.+?)(?: SETTINGS |$)", create_table_query)
    assert found, create_table_query
    return found.group(1).strip()


def test_applied_migrations_give_each_table_its_ttl_in_clickhouse(settings: Settings):
    """The real embedded ClickHouse (chdb): apply the migrations, read the TTLs back."""
    expected = {
        t.table: f"toDateTime({t.column}) + toIntervalDay({t.days})" for t in table_ttls(CATALOG)
    }
    warehouse = clickhouse.connect(settings)
    try:
        clickhouse.ensure_database(warehouse, "sluice")
        warehouse.command("USE sluice")
        migrations.migrate(warehouse, MIGRATIONS)
        migrated = _ttls(warehouse, expected)
        migrations.migrate(warehouse, MIGRATIONS)
        for statement in ttl_statements(CATALOG):  # running one again changes nothing
            warehouse.command(statement)
        again = _ttls(warehouse, expected)
    finally:
        warehouse.close()
    assert migrated == expected
    assert again == expected


def _ttls(warehouse: clickhouse.DirectWarehouse, tables: dict[str, str]) -> dict[str, str]:
    rows = warehouse.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = 'sluice'"
    ).rows
    return {str(name): _ttl_of(str(query)) for name, query in rows if name in tables}

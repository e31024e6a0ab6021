"""An embedded ClickHouse with the sink in front of it, for tests without Kafka.

Records are Avro-encoded against an in-memory registry, whose schema ids ClickHouse
cannot look up, so these warehouses decode in Python (``avro_ingest`` off);
tests/integration/test_sink_avro_ingest.py covers ClickHouse's own decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from processors.sink import processor as sink
from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.runtime.spec import NoSettings
from streams.runtime.testing import Harness, MemoryRegistry
from streams.settings import Settings
from streams.warehouse import migrations

_migrate = migrations.migrate


def embedded_settings(path: Path) -> Settings:
    """Settings of an embedded ClickHouse at ``path`` (database ``sluice``)."""
    return Settings(
        clickhouse={"url": f"chdb://{path}", "database": "sluice", "avro_ingest": False}
    )


def memory_serde(catalog: Catalog, topics: Iterable[str] | None = None) -> AvroSerde:
    """A serde whose registry (in memory) knows the value schemas of ``topics``.

    Without ``topics``, the registry knows every Avro topic of ``catalog``.
    """
    if topics is None:
        return AvroSerde(MemoryRegistry.for_catalog(catalog), catalog)  # type: ignore[arg-type]
    registry = MemoryRegistry()
    for topic in topics:
        registry.register(catalog.topic(topic).subject, catalog.value_schema(topic).document)
    return AvroSerde(registry, catalog)  # type: ignore[arg-type]


@contextmanager
def sink_context(
    settings: Settings, catalog: Catalog, serde: AvroSerde
) -> Iterator[sink.SinkContext]:
    """The sink's context, set up and torn down as the runner does.

    Its serde reads the same in-memory registry as ``serde``, so records that
    ``serde`` encoded decode in the sink.
    """
    with Harness(
        sink.PROCESSOR,
        settings=settings,
        config=NoSettings(),
        catalog=catalog,
        registry=serde.registry,  # type: ignore[arg-type]
    ) as harness:
        yield harness.ctx


def migrate_without_ttl_merges(warehouse: Any, directory: Path) -> list[migrations.Outcome]:
    """``migrations.migrate``, then stop the TTL merges of the embedded ClickHouse.

    Unit tests insert rows of fixed dates, which the tables' TTLs (data classes in
    schemas/topics.yaml) may already have expired: a TTL merge would drop them at any
    moment. tests/unit/warehouse/test_retention.py covers the TTLs themselves.
    """
    outcomes = _migrate(warehouse, directory)
    warehouse.command("SYSTEM STOP TTL MERGES")
    return outcomes

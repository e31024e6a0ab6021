"""An embedded ClickHouse with the sink in front of it, for tests without Kafka.

Records are Avro-encoded against an in-memory registry, whose schema ids ClickHouse
cannot look up, so these warehouses decode in Python (``avro_ingest`` off);
tests/integration/test_sink_avro_ingest.py covers ClickHouse's own decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from processors import sink
from streams.catalog import Catalog
from streams.processor import Context
from streams.serde import AvroSerde
from streams.settings import Settings
from tests.unit.fakes import DictRegistry


def embedded_settings(path: Path) -> Settings:
    """Settings of an embedded ClickHouse at ``path`` (database ``sluice``)."""
    return Settings(
        clickhouse={"url": f"chdb://{path}", "database": "sluice", "avro_ingest": False}
    )


def memory_serde(catalog: Catalog, topics: Iterable[str]) -> AvroSerde:
    """A serde whose registry (in memory) knows the value schemas of ``topics``."""
    registry = DictRegistry()
    for topic in topics:
        registry.register(f"{topic}-value", catalog.value_schema(topic).document)
    return AvroSerde(registry, catalog)


@contextmanager
def sink_context(settings: Settings, catalog: Catalog, serde: AvroSerde) -> Iterator[Context]:
    """The sink's context, set up and torn down as the runner does."""
    context = Context("sink", settings, catalog, logging.getLogger("test"))
    context.services["serde"] = serde
    sink.setup(context)
    try:
        yield context
    finally:
        sink.teardown(context)

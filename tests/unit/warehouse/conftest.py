"""An embedded ClickHouse with the sink in front of it, for the warehouse's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.sink.processor import SinkContext
from streams.contracts.catalog import load_catalog
from streams.contracts.serde import AvroSerde
from streams.settings import PROJECT_ROOT, Settings
from tests.support.warehouse import embedded_settings, memory_serde, sink_context

CATALOG = load_catalog(PROJECT_ROOT / "schemas")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of an embedded ClickHouse in the test's own directory."""
    return embedded_settings(tmp_path / "ch")


@pytest.fixture
def serde() -> AvroSerde:
    """A serde over an in-memory registry that knows every Avro topic of the catalog."""
    return memory_serde(CATALOG)


@pytest.fixture
def ctx(settings: Settings, serde: AvroSerde) -> Iterator[SinkContext]:
    """The sink, set up over the embedded ClickHouse (torn down after the test)."""
    with sink_context(settings, CATALOG, serde) as context:
        yield context

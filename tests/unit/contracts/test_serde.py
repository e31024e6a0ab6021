"""Confluent wire-format framing and decoding errors (the registry is in memory here;
tests/integration/test_kafka_clients.py runs the same round trip against the real one)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streams.contracts.catalog import load_catalog
from streams.contracts.records import RawEvent
from streams.contracts.serde import AvroSerde, SchemaNotRegisteredError
from streams.errors import RecordError
from streams.runtime.testing import MemoryRegistry
from streams.settings import PROJECT_ROOT


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(PROJECT_ROOT / "schemas")


@pytest.fixture
def serde(catalog):
    registry = MemoryRegistry()
    registry.register("raw.support_tickets-value", catalog.schemas["sluice.v1.RawEvent"].document)
    return AvroSerde(registry, catalog)


def event():
    return RawEvent(
        "e1",
        "support_tickets",
        "test",
        datetime(2026, 1, 1, tzinfo=UTC),
        json.dumps({"a": 1}),
        {"k": "v"},
    )


def test_round_trip(serde, catalog):
    data = serde.encoder("raw.support_tickets")(event().to_avro())
    assert data[:5] == b"\x00\x00\x00\x00\x01"
    decoded = serde.decode(data, catalog.schemas["sluice.v1.RawEvent"])
    assert RawEvent.from_avro(decoded) == event()


def test_unregistered_schema_is_a_clear_error(serde):
    with pytest.raises(SchemaNotRegisteredError, match="sluice schemas apply"):
        serde.encoder("inference.requests")


@pytest.mark.parametrize(
    ("mangle", "error_class"),
    [
        (lambda d: b"\x00\x00", "TruncatedRecord"),
        (lambda d: b"\x01" + d[1:], "UnknownMagicByte"),
        (lambda d: b"{" + d[1:], "UnknownMagicByte"),
        (lambda d: b"\x00\x00\x00\x03\xe7" + d[5:], "UnknownSchemaId"),
        (lambda d: d[: len(d) // 2], "CorruptAvro"),
        (lambda d: d + b"\x00\x01", "CorruptAvro"),
    ],
)
def test_bad_bytes_raise_record_errors(serde, catalog, mangle, error_class):
    data = serde.encoder("raw.support_tickets")(event().to_avro())
    with pytest.raises(RecordError) as raised:
        serde.decode(mangle(data), catalog.schemas["sluice.v1.RawEvent"])
    assert raised.value.error_class == error_class
    assert raised.value.stage == "deserialize"


def test_tombstone(serde, catalog):
    with pytest.raises(RecordError, match="tombstone"):
        serde.decode(None, catalog.schemas["sluice.v1.RawEvent"])


def test_unknown_id_is_cached(serde, catalog):
    calls = []
    original = serde.registry.get_schema
    serde.registry.get_schema = lambda i: calls.append(i) or original(i)
    for _ in range(3):
        with pytest.raises(RecordError):
            serde.decode(b"\x00\x00\x00\x00\x63rest", catalog.schemas["sluice.v1.RawEvent"])
    assert calls == [99]

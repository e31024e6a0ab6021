"""The validate processor's pure functions: every raw shape and every way to fail."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from processors.validate.processor import validate_record
from streams.contracts.catalog import load_catalog
from streams.contracts.records import RawEvent
from streams.contracts.serde import AvroSerde
from streams.errors import RecordError
from streams.runtime.spec import InputRecord
from streams.runtime.testing import MemoryRegistry
from streams.settings import PROJECT_ROOT


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(PROJECT_ROOT / "schemas")


@pytest.fixture(scope="module")
def dataset(catalog):
    return catalog.dataset("support_tickets")


@pytest.fixture(scope="module")
def serde(catalog):
    registry = MemoryRegistry()
    registry.register("raw.support_tickets-value", catalog.schemas["sluice.v1.RawEvent"].document)
    registry.register(
        "inference.requests-value", catalog.schemas["sluice.v1.InferenceRequest"].document
    )
    return AvroSerde(registry, catalog)


@pytest.fixture(scope="module")
def decode(serde, catalog):
    raw = catalog.schemas["sluice.v1.RawEvent"]
    return lambda data: serde.decode(data, raw)


def envelope(serde, payload: str, dataset="support_tickets") -> bytes:
    event = RawEvent("ev-1", dataset, "test", datetime(2026, 1, 1, tzinfo=UTC), payload)
    return serde.encoder("raw.support_tickets")(event.to_avro())


def record(raw: bytes | None, offset=7) -> InputRecord:
    return InputRecord("raw.support_tickets", 1, offset, None, raw, raw, [], 0)


def test_envelope_and_plain_json_give_the_same_record(good_ticket, serde, dataset, decode):
    payload = json.dumps(good_ticket())
    via_envelope = validate_record(record(envelope(serde, payload)), dataset, decode)
    via_json = validate_record(record(payload.encode()), dataset, decode)
    assert via_envelope.topic == via_json.topic == "support_tickets.validated"
    assert via_envelope.key == via_json.key == "TCK-12345678"
    meta_e, meta_j = via_envelope.value.pop("meta"), via_json.value.pop("meta")
    assert via_envelope.value == via_json.value
    assert meta_e["event_id"] == "ev-1"
    assert meta_j["event_id"] == "raw.support_tickets:1:7"
    assert meta_e["raw_offset"] == 7
    assert meta_e["contract_version"] == 1


def test_kafka_connect_schema_wrapper_is_unwrapped(good_ticket, dataset, decode):
    wrapped = json.dumps({"schema": {"type": "struct"}, "payload": good_ticket()}).encode()
    assert validate_record(record(wrapped), dataset, decode).key == "TCK-12345678"


@pytest.mark.parametrize(
    ("raw", "error_class", "words"),
    [
        (b"\x05garbage", "UnknownMagicByte", "first byte 0x05"),
        (b"\x01\x00\x00\x00\x01abc", "UnknownMagicByte", "magic"),
        (b"\x00\x00\x00\x03\xe7abc", "UnknownSchemaId", "unknown schema id 999"),
        (b'{"ticket_id": "\xff\xfe"}', "InvalidUtf8", "UTF-8"),
        (b'{"ticket_id": ', "InvalidJson", "not valid JSON"),
        (b"[1, 2]", "InvalidJson", "a JSON list"),
        (b"", "EmptyRecord", "empty"),
        (None, "EmptyRecord", "tombstone"),
        (b"{" + b" " * 70_000 + b"}", "RecordTooLarge", "allows 65536"),
    ],
)
def test_garbage_is_refused_with_a_reason(dataset, decode, raw, error_class, words):
    with pytest.raises(RecordError) as raised:
        validate_record(record(raw), dataset, decode)
    assert raised.value.error_class == error_class
    assert words in raised.value.message


def test_truncated_envelope(good_ticket, serde, dataset, decode):
    data = envelope(serde, json.dumps(good_ticket()))
    with pytest.raises(RecordError) as raised:
        validate_record(record(data[: len(data) // 2]), dataset, decode)
    assert raised.value.error_class == "CorruptAvro"


def test_envelope_for_another_dataset(good_ticket, serde, dataset, decode):
    data = envelope(serde, json.dumps(good_ticket()), dataset="other")
    with pytest.raises(RecordError, match=r"another dataset \(5 characters\)"):
        validate_record(record(data), dataset, decode)


def test_envelope_with_bad_payload(serde, dataset, decode):
    with pytest.raises(RecordError) as raised:
        validate_record(record(envelope(serde, "not json")), dataset, decode)
    assert "RawEvent.payload is not valid JSON" in raised.value.message


def test_request_written_to_raw_topic_is_a_schema_mismatch(serde, catalog, dataset, decode):
    from streams.contracts.records import InferenceRequest

    request = InferenceRequest.new("acme", "minilm", "hello")
    data = serde.encoder("inference.requests")(request.to_avro())
    with pytest.raises(RecordError) as raised:
        validate_record(record(data), dataset, decode)
    assert raised.value.error_class in {"SchemaMismatch", "CorruptAvro"}


def test_contract_failure_names_field_and_rule(good_ticket, dataset, decode):
    raw = json.dumps(good_ticket(priority="critical", satisfaction=0)).encode()
    with pytest.raises(RecordError) as raised:
        validate_record(record(raw), dataset, decode)
    error = raised.value
    assert error.stage == "contract"
    assert error.details["field"] == "priority"
    assert error.details["rule"] == "enum"
    violations = json.loads(error.details["violations"])
    assert {(v["field"], v["rule"]) for v in violations} == {
        ("priority", "enum"),
        ("satisfaction", "min"),
    }
    assert "priority: is not one of [low, medium, high, urgent] [enum]" in error.message

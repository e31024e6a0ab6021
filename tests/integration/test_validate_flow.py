"""validate against the real stack: every kind of input lands exactly where it should."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from streams.contracts.serde import AvroSerde
from streams.runtime.dead_letters import parse_error_headers
from streams.sdk.client import SluiceClient
from tests.support.world import (
    TOPIC_SUBJECTS,
    World,
    make_world,
    process_log,
    produce,
    read_all,
    running,
)


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


@pytest.fixture
def ticket(good_ticket):
    """Builds ticket number ``i``: ``ticket(i, **changes)``."""

    def build(i: int, **changes) -> dict:
        return good_ticket(ticket_id=f"TCK-{i:08d}", **changes)

    return build


def test_valid_invalid_and_garbage_inputs(world: World, ticket):
    serde = AvroSerde(
        __import__("streams.runtime.kafka", fromlist=["registry"]).registry(world.settings),
        world.catalog,
    )
    envelope = serde.encoder("raw.support_tickets")
    with SluiceClient(world.settings, world.catalog, source="test") as client:
        for i in range(200):  # valid, through the SDK (RawEvent envelope)
            client.send_record(world.dataset, ticket(i))
        for i in range(200, 230):  # broken contract, through the SDK
            client.send_record(world.dataset, ticket(i, priority="critical"))
    good_event = envelope(
        {
            "event_id": "x",
            "dataset": world.dataset,
            "source": "t",
            "produced_at": 0,
            "payload": json.dumps(ticket(999)),
            "attributes": {},
        }
    )
    plain_json = [json.dumps(ticket(i)).encode() for i in range(300, 350)]
    connect_json = [
        json.dumps({"schema": {"type": "struct"}, "payload": ticket(i)}).encode()
        for i in range(400, 420)
    ]
    garbage = {
        "UnknownMagicByte": [b"\x05not avro at all", b"\x01" + good_event[1:]],
        "UnknownSchemaId": [b"\x00\x7f\xff\xff\xf0" + good_event[5:]],
        "CorruptAvro": [good_event[: len(good_event) // 2]],
        "RecordTooLarge": [json.dumps(ticket(500, body="x" * 70_000)).encode()],
        "InvalidUtf8": [b'{"ticket_id": "TCK-\xff\xfe"}'],
        "InvalidJson": [b'{"ticket_id": "TCK-00000001", ', b"[]"],
        "EmptyRecord": [b"", None],
        "ContractViolation": [json.dumps(ticket(600, satisfaction=11)).encode()],
    }
    produce(world.settings, world.raw, plain_json + connect_json)
    produce(world.settings, world.raw, [v for values in garbage.values() for v in values])

    expected_valid = 200 + 50 + 20
    expected_dlq = 30 + sum(len(v) for v in garbage.values())
    with running(world, "validate") as process:
        validated = read_all(world.settings, world.validated, expected_valid)
        dead = read_all(world.settings, world.dlq, expected_dlq)
        assert process.poll() is None, "validate must keep running after bad input"

    assert len(validated) == expected_valid, process_log(world)
    keys = Counter(m.key() for m in validated)
    assert all(n == 1 for n in keys.values()), "a record was validated twice"
    assert len(dead) == expected_dlq
    classes = Counter(parse_error_headers(m.headers()).error_class for m in dead)
    expected_classes = Counter({k: len(v) for k, v in garbage.items()})
    expected_classes["ContractViolation"] += 30
    assert classes == expected_classes
    originals = {m.value() or b"" for m in dead}
    for values in garbage.values():
        for value in values:
            assert (value or b"") in originals, "DLQ must keep the original bytes untouched"
    info = parse_error_headers(
        next(
            m.headers()
            for m in dead
            if parse_error_headers(m.headers()).details.get("rule") == "enum"
        )
    )
    assert info.processor == "validate"
    assert info.stage == "contract"
    assert info.topic == world.raw
    assert info.details["field"] == "priority"
    assert "priority: is not one of" in info.message


def test_validated_records_decode_with_the_registered_schema(world: World, ticket):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    with SluiceClient(world.settings, world.catalog) as client:
        client.send_record(world.dataset, ticket(1))
    with running(world, "validate"):
        [message] = read_all(world.settings, world.validated, 1, settle=0.5)
    deserializer = AvroDeserializer(
        SchemaRegistryClient(world.settings.registry.client_config()), conf=TOPIC_SUBJECTS
    )
    value = deserializer(message.value(), SerializationContext(world.validated, MessageField.VALUE))
    assert value["ticket_id"] == "TCK-00000001"
    assert value["meta"]["raw_topic"] == world.raw
    assert message.key() == b"TCK-00000001"

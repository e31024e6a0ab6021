"""validate against hostile producers on the real stack: the record goes, the processor stays.

A producer registers a recursive schema under a subject of its own and frames a
deeply nested record with its id. Nested 100,000 deep, such a record overflowed
fastavro's C stack before the decoder checked ids against the topic's subject (the
unit tests prove that in a subprocess); validate refuses one that large by its size
alone, so here it is nested 8,000 deep, under the contract's 64 KiB, and has to be
refused by the registry check: dead-lettered, and the next record validated.
"""

from __future__ import annotations

import json
import struct

import pytest
from confluent_kafka.schema_registry import Schema

from streams.runtime import kafka
from streams.runtime.dead_letters import parse_error_headers
from tests.support.world import World, make_world, process_log, produce, read_all, running

LEVELS = 8_000  # 7 bytes a level: under the contract's max_record_bytes (64 KiB)


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def recursive_raw_event(world: World) -> str:
    """RawEvent's own name and fields, plus a first field that contains a RawEvent.

    It resolves against the RawEvent reader schema, so a decoder that accepted the
    id would read it: the recursion is the whole attack.
    """
    document = json.loads(world.catalog.schemas["sluice.v1.RawEvent"].document)
    document["fields"].insert(0, {"name": "next", "type": ["null", "sluice.v1.RawEvent"]})
    return json.dumps(document)


def test_a_record_framed_with_a_foreign_recursive_schema_is_dead_lettered(
    world: World, good_ticket
) -> None:
    registry = kafka.registry(world.settings)
    subject = f"{world.raw}.unrelated-value"  # this world's own, not the topic's subject
    hostile_id = registry.register_schema(subject, Schema(recursive_raw_event(world), "AVRO"))
    # Each level: the "next" branch, then (innermost first) each level's other fields:
    # three empty strings, produced_at 1, an empty payload and an empty map.
    hostile = (
        struct.pack(">bI", 0, hostile_id)
        + b"\x02" * LEVELS
        + b"\x00"
        + b"\x00\x00\x00\x02\x00\x00" * (LEVELS + 1)
    )
    deep_json = b"[" * 30_000 + b"]" * 30_000  # under the contract's 64 KiB, 30,000 deep
    valid = json.dumps(good_ticket(ticket_id="TCK-00000042")).encode()
    produce(world.settings, world.raw, [hostile, deep_json, valid])

    with running(world, "validate") as process:
        validated = read_all(world.settings, world.validated, 1)
        dead = read_all(world.settings, world.dlq, 2)
        assert process.poll() is None, "validate must keep running after a hostile record"

    assert [m.key() for m in validated] == [b"TCK-00000042"], process_log(world)
    assert len(dead) == 2, process_log(world)
    by_kind = {parse_error_headers(m.headers()).error_class: m for m in dead}
    assert set(by_kind) == {"UnknownSchemaId", "InvalidJson"}
    foreign = by_kind["UnknownSchemaId"]
    assert foreign.value() == hostile, "the DLQ keeps the original bytes"
    info = parse_error_headers(foreign.headers())
    assert info.stage == "deserialize"
    assert f"schema id {hostile_id} is not registered under subject" in info.message
    deep = parse_error_headers(by_kind["InvalidJson"].headers())
    assert "deeper than 64 levels" in deep.message

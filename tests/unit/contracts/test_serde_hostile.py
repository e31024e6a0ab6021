"""The decoder against hostile producers: foreign schema ids, huge, deep and recursive schemas.

A recursive schema with a value nested 100,000 deep kills a process that hands it
to fastavro (a segmentation fault, not an exception), so the tests that could
crash run the decode in a subprocess and check that it exits cleanly.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from streams.contracts.catalog import load_catalog
from streams.contracts.nesting import avro_schema_depth, json_nests_deeper
from streams.contracts.serde import AvroSerde
from streams.errors import RecordError, SchemaMismatch, SchemaTooComplex
from streams.runtime.testing import MemoryRegistry
from streams.settings import PROJECT_ROOT, RegistrySettings

TOPIC = "raw.support_tickets"
SUBJECT = f"{TOPIC}-value"
RAW_EVENT = "sluice.v1.RawEvent"
#: A self-recursive record: tiny, yet its values nest as deep as the producer likes.
RECURSIVE = json.dumps(
    {
        "type": "record",
        "name": "Node",
        "namespace": "evil",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
)
#: A one-string record: harmless, but not the topic's.
OTHER = json.dumps({"type": "record", "name": "Other", "fields": [{"name": "s", "type": "string"}]})


def framed(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def deep_body(levels: int) -> bytes:
    """A Node value ``levels`` deep: union branch 1 (zigzag 0x02) per level, then null."""
    return b"\x02" * levels + b"\x00"


def nested_arrays(levels: int) -> str:
    """A record whose one field is an array of arrays ``levels`` deep, built as text."""
    inner = '{"type":"array","items":' * levels + '"string"' + "}" * levels
    return '{"type":"record","name":"Deep","fields":[{"name":"a","type":' + inner + "}]}"


class CountingRegistry(MemoryRegistry):
    """A MemoryRegistry that counts the calls the serde makes on the decoding path."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def get_schema(self, schema_id: int) -> Any:
        self.calls.append("get_schema")
        return super().get_schema(schema_id)

    def get_versions(self, subject: str, deleted: bool = False) -> list[int]:
        self.calls.append("get_versions")
        return super().get_versions(subject, deleted)

    def get_version(self, subject: str, version: int, deleted: bool = False) -> Any:
        self.calls.append("get_version")
        return super().get_version(subject, version, deleted)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(PROJECT_ROOT / "schemas")


@pytest.fixture
def registry(catalog) -> CountingRegistry:
    registry = CountingRegistry()
    registry.register(SUBJECT, catalog.schemas[RAW_EVENT].document)
    return registry


def serde_for(registry: MemoryRegistry, catalog, **limits: Any) -> AvroSerde:
    return AvroSerde(registry, catalog, RegistrySettings(**limits))  # type: ignore[arg-type]


def refusal(serde: AvroSerde, catalog, data: bytes, topic: str | None = TOPIC) -> RecordError:
    with pytest.raises(RecordError) as raised:
        serde.decode(data, catalog.schemas[RAW_EVENT], topic=topic)
    return raised.value


def test_an_id_registered_under_another_subject_is_refused_unfetched(registry, catalog) -> None:
    other_id = registry.register("somebody-else-value", OTHER)
    serde = serde_for(registry, catalog)
    error = refusal(serde, catalog, framed(other_id, b"\x04hi"))
    assert error.error_class == "UnknownSchemaId"
    assert error.stage == "deserialize"
    assert f"not registered under subject {SUBJECT!r}" in error.message
    assert "get_schema" not in registry.calls  # never fetched, never parsed


def test_the_topics_own_ids_decode(registry, catalog) -> None:
    serde = serde_for(registry, catalog)
    event = {
        "event_id": "e1",
        "dataset": "support_tickets",
        "source": "test",
        "produced_at": 1_700_000_000_000,
        "payload": "{}",
        "attributes": {},
    }
    data = serde.encoder(TOPIC)(event)
    assert serde.decode(data, catalog.schemas[RAW_EVENT], topic=TOPIC)["event_id"] == "e1"
    assert serde.decode_as_written(data, topic=TOPIC)["event_id"] == "e1"


def test_a_schema_over_the_size_limit_is_refused_and_remembered(registry, catalog) -> None:
    huge = json.loads(OTHER) | {"doc": "x" * 300_000}
    huge_id = registry.register(SUBJECT, json.dumps(huge))
    serde = serde_for(registry, catalog)
    for _ in range(3):
        error = refusal(serde, catalog, framed(huge_id, b"\x04hi"))
        assert error.error_class == "SchemaTooComplex"
        assert "262144" in error.message and "MAX_SCHEMA_BYTES" in error.message
    assert registry.calls.count("get_schema") == 1  # the refusal is cached for good


def test_a_schema_over_the_depth_limit_is_refused(registry, catalog) -> None:
    deep_id = registry.register(SUBJECT, nested_arrays(80))
    serde = serde_for(registry, catalog)
    error = refusal(serde, catalog, framed(deep_id, b"\x00"))
    assert error.error_class == "SchemaTooComplex"
    assert "deeper than 64 levels" in error.message
    shallow_id = registry.register(SUBJECT, nested_arrays(10))
    assert serde_for(registry, catalog).decode_as_written(framed(shallow_id, b"\x00"), topic=TOPIC)


def test_a_recursive_schema_is_refused_even_under_the_topics_own_subject(registry, catalog) -> None:
    recursive_id = registry.register(SUBJECT, RECURSIVE)
    error = refusal(serde_for(registry, catalog), catalog, framed(recursive_id, deep_body(3)))
    assert error.error_class == "SchemaTooComplex"
    assert "recursive: type evil.Node contains itself" in error.message


_CHILD = textwrap.dedent(
    """
    import json, struct, sys
    from streams.contracts.catalog import load_catalog
    from streams.contracts.serde import AvroSerde
    from streams.errors import RecordError, SchemaMismatch, SchemaTooComplex
    from streams.runtime.testing import MemoryRegistry
    from streams.settings import PROJECT_ROOT, RegistrySettings

    recursive, deep_schema = sys.stdin.read().split("\\n", 1)
    catalog = load_catalog(PROJECT_ROOT / "schemas")
    registry = MemoryRegistry()
    registry.register("raw.support_tickets-value", catalog.schemas["sluice.v1.RawEvent"].document)
    # Another document (one registered under both subjects would have one id in both).
    foreign = registry.register("somebody-else-value", recursive.replace("evil", "elsewhere"))
    own = registry.register("raw.support_tickets-value", recursive)
    nested = registry.register("raw.support_tickets-value", deep_schema)
    # RawEvent's own name and fields plus a recursive first field: it resolves against the
    # reader schema, so fastavro reads it (before these checks: a SIGSEGV, exit 139).
    raw_event = json.loads(catalog.schemas["sluice.v1.RawEvent"].document)
    raw_event["fields"].insert(0, {"name": "next", "type": ["null", "sluice.v1.RawEvent"]})
    lookalike = registry.register("somebody-else-value", json.dumps(raw_event))
    body = b"\\x02" * 100_000 + b"\\x00"
    # Each level's other fields: three empty strings, produced_at 1, "" and an empty map.
    fields = b"\\x00\\x00\\x00\\x02\\x00\\x00"
    serde = AvroSerde(registry, catalog, RegistrySettings(max_schema_bytes=16 * 1024 * 1024))
    cases = [(foreign, b""), (own, b""), (nested, b""), (lookalike, fields * 100_001)]
    for schema_id, tail in cases:
        data = struct.pack(">bI", 0, schema_id) + body + tail
        for topic in ("raw.support_tickets", None):
            try:
                serde.decode(data, catalog.schemas["sluice.v1.RawEvent"], topic=topic)
                print("decoded")
            except RecordError as error:
                print(error.error_class)
    """
)


def test_a_value_nested_100000_deep_is_dead_lettered_without_crashing() -> None:
    # The schema document nested 100,000 deep is built as text: nothing here parses it.
    deep_schema = nested_arrays(100_000)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=RECURSIVE + "\n" + deep_schema,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    assert child.returncode == 0, child.stderr[-2000:]  # a crash would be -11 (SIGSEGV)
    assert child.stdout.split() == [
        "UnknownSchemaId",  # another subject's recursive schema, read from the topic
        "SchemaTooComplex",  # the same id with no topic: the recursion is refused
        "SchemaTooComplex",  # recursive, though registered under the topic's subject
        "SchemaTooComplex",
        "SchemaTooComplex",  # a schema document nested 100,000 deep
        "SchemaTooComplex",
        "UnknownSchemaId",  # RawEvent's look-alike, registered under another subject
        "SchemaTooComplex",
    ]


def test_a_new_version_is_accepted_once_the_subject_is_read_again(registry, catalog) -> None:
    serde = serde_for(registry, catalog, subject_refresh_s=0.2)
    own = serde.encoder(TOPIC)
    event = {
        "event_id": "e1",
        "dataset": "support_tickets",
        "source": "test",
        "produced_at": 1_700_000_000_000,
        "payload": "{}",
        "attributes": {},
    }
    serde.decode(own(event), catalog.schemas[RAW_EVENT], topic=TOPIC)  # reads the subject
    evolved = json.loads(catalog.schemas[RAW_EVENT].document)
    evolved["fields"].append({"name": "extra", "type": ["null", "string"], "default": None})
    v2 = registry.register(SUBJECT, json.dumps(evolved))
    data = framed(v2, own(event)[5:] + b"\x00")  # the same fields, then a null extra
    assert refusal(serde, catalog, data).error_class == "UnknownSchemaId"  # read just now
    time.sleep(0.25)
    decoded = serde.decode(data, catalog.schemas[RAW_EVENT], topic=TOPIC)
    assert decoded["event_id"] == "e1"
    assert registry.calls.count("get_versions") == 2
    assert registry.calls.count("get_version") == 2  # version 1 is not asked again


def test_a_flood_of_unknown_ids_costs_no_registry_call_per_record(registry, catalog) -> None:
    other_id = registry.register("somebody-else-value", OTHER)
    serde = serde_for(registry, catalog)
    for schema_id in [other_id] * 500 + list(range(1000, 1500)):
        assert refusal(serde, catalog, framed(schema_id, b"\x04hi")).error_class == (
            "UnknownSchemaId"
        )
    assert registry.calls == ["get_versions", "get_version"]


def test_an_unknown_subject_refuses_every_id(catalog) -> None:
    registry = CountingRegistry()
    some_id = registry.register("somebody-else-value", OTHER)
    serde = serde_for(registry, catalog)
    for _ in range(3):
        assert refusal(serde, catalog, framed(some_id, b"\x04hi")).error_class == "UnknownSchemaId"
    assert registry.calls == ["get_versions"]


def test_sluices_own_schemas_are_far_inside_the_limits(catalog) -> None:
    limits = RegistrySettings()
    for name, schema in catalog.schemas.items():
        assert len(schema.document.encode()) < limits.max_schema_bytes / 8, name
        assert avro_schema_depth(json.loads(schema.document), limits.max_schema_depth) <= 8, name


@pytest.mark.parametrize(
    ("schema", "depth"),
    [
        ("string", 0),
        (["null", "string"], 1),
        ({"type": "map", "values": {"type": "array", "items": "long"}}, 2),
        ({"type": "string", "logicalType": "uuid"}, 0),
        (
            # A reference nests as deep as its definition: B.b is 1 + A (2) + its union.
            {
                "type": "record",
                "name": "B",
                "namespace": "n",
                "fields": [
                    {
                        "name": "a",
                        "type": {
                            "type": "record",
                            "name": "A",
                            "fields": [{"name": "x", "type": {"type": "array", "items": "int"}}],
                        },
                    },
                    {"name": "b", "type": ["null", "n.A"]},
                    {"name": "c", "type": {"type": "enum", "name": "E", "symbols": ["Y"]}},
                ],
            },
            4,
        ),
    ],
)
def test_schema_depth(schema: Any, depth: int) -> None:
    assert avro_schema_depth(schema, 64) == depth


@pytest.mark.parametrize(
    ("schema", "error"),
    [
        (json.loads(RECURSIVE), "recursive"),
        (
            # Recursion through another named type is recursion too.
            {
                "type": "record",
                "name": "P",
                "fields": [
                    {
                        "name": "q",
                        "type": {
                            "type": "record",
                            "name": "Q",
                            "fields": [{"name": "p", "type": {"type": "array", "items": "P"}}],
                        },
                    }
                ],
            },
            "recursive: type P",
        ),
        (json.loads(nested_arrays(65)), "deeper than 64"),
    ],
)
def test_schemas_refused(schema: Any, error: str) -> None:
    with pytest.raises(SchemaTooComplex, match=error):
        avro_schema_depth(schema, 64)


def test_an_undefined_reference_is_not_a_schema() -> None:
    with pytest.raises(SchemaMismatch, match="undefined type Nowhere"):
        avro_schema_depth({"type": "array", "items": "Nowhere"}, 64)


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        (b"[" * 100_000 + b"]" * 100_000, True),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, True),
        (b'{"a": "[[[[[[[[[[ {{{{{{{{ \\" [[[[[["}', False),
        (b"[[[]]]", False),
        (b"[[[[]]]]", True),
        (b'"' + b"[" * 10, True),  # not JSON: safe rather than exact
    ],
)
def test_json_depth_is_measured_without_recursion(text: bytes, deeper: bool) -> None:
    assert json_nests_deeper(text, 3) is deeper

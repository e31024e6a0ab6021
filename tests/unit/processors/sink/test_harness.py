"""sink run in process through the runner's real batch path, into an embedded ClickHouse."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from processors.sink.processor import PROCESSOR
from streams.contracts.catalog import catalog_for
from streams.runtime.spec import NoSettings
from streams.runtime.testing import Harness, MemoryRegistry
from tests.support.warehouse import embedded_settings

FINDING = {
    "request_id": "r1",
    "tenant_id": "acme",
    "field": "input_text",
    "entity_type": "EMAIL_ADDRESS",
    "start": 13,
    "end": 37,
    "score": 1.0,
    "recognizer": "EmailRecognizer",
    "action": "hash",
    "policy_version": "7",
    "detected_at": 1_700_000_000_000,
}


def test_findings_land_in_their_table_and_garbage_is_dead_lettered(tmp_path: Path) -> None:
    with Harness(PROCESSOR, settings=embedded_settings(tmp_path), config=NoSettings()) as harness:
        out = harness.run(
            [
                harness.record("pii.findings", FINDING, key="r1"),
                harness.record("pii.findings", {**FINDING, "start": 40, "end": 52}, key="r1"),
                harness.record("pii.findings", b"\x07 not the wire format"),
            ]
        )
        assert out.produced == []  # a sink writes tables, not topics
        assert out.kinds() == ["UnknownMagicByte"]
        assert out.dead_letters[0].topic == "pii.findings.dlq"
        assert harness.ctx.resources.inserted == {"pii_findings": 2}
        warehouse = harness.ctx.resources.warehouse
        assert warehouse is not None
        rows = warehouse.query(
            "SELECT request_id, entity_type, start FROM pii_findings FINAL ORDER BY start"
        ).rows
    assert rows == [("r1", "EMAIL_ADDRESS", 13), ("r1", "EMAIL_ADDRESS", 40)]


RECURSIVE = json.dumps(
    {
        "type": "record",
        "name": "Node",
        "namespace": "evil",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
)


def test_hostile_schemas_are_dead_lettered_and_their_dead_letters_load(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    registry = MemoryRegistry.for_catalog(catalog_for(settings))
    foreign = registry.register("somebody-else-value", RECURSIVE.replace("evil", "elsewhere"))
    own = registry.register("pii.findings-value", RECURSIVE)  # a hostile version 2
    deep = b"\x02" * 100_000 + b"\x00"  # nested 100,000 deep: fastavro would crash on it
    hostile = [struct.pack(">bI", 0, i) + deep for i in (foreign, own)]
    with Harness(PROCESSOR, settings=settings, config=NoSettings(), registry=registry) as harness:
        out = harness.run(
            [
                harness.record("pii.findings", hostile[0]),
                harness.record("pii.findings", FINDING, key="r1"),
                harness.record("pii.findings", hostile[1]),
            ]
        )
        assert out.kinds() == ["UnknownSchemaId", "SchemaTooComplex"]
        assert [d.raw for d in out.dead_letters] == hostile
        # The dead letters themselves load (a *.dlq topic is read as bytes and headers).
        again = harness.run(
            [harness.record(d.topic, d.raw, key=d.key, headers=d.headers) for d in out.dead_letters]
        )
        assert again.dead_letters == []
        assert harness.ctx.resources.inserted == {"pii_findings": 1, "dead_letters": 2}


def test_a_request_as_received_keeps_no_free_text(tmp_path: Path) -> None:
    """Before guard, user_id and source are unchecked: only the guarded stages store them."""
    request = {
        "request_id": "r2",
        "tenant_id": "acme",
        "model": "textgen",
        "input_text": "hello",
        "user_id": "zelda.quixote7731@example.org",
        "source": "sdk:crm zelda.quixote7731@example.org",
        "created_at": 1_700_000_000_000,
    }
    safe = {**request, "user_id": "<WITHHELD:user_id_personal_data>", "source": "sdk:crm <E>"}
    with Harness(PROCESSOR, settings=embedded_settings(tmp_path), config=NoSettings()) as harness:
        out = harness.run(
            [
                harness.record("inference.requests", request, key="r2"),
                harness.record("inference.requests.blocked", safe, key="r2"),
            ]
        )
        assert out.dead_letters == []
        warehouse = harness.ctx.resources.warehouse
        assert warehouse is not None
        rows = warehouse.query(
            "SELECT stage, user_id, source, input_chars FROM requests FINAL ORDER BY stage"
        ).rows
    assert rows == [
        ("blocked", "<WITHHELD:user_id_personal_data>", "sdk:crm <E>", 5),
        ("received", None, "", 5),
    ]

"""sink run in process through the runner's real batch path, into an embedded ClickHouse."""

from __future__ import annotations

from pathlib import Path

from processors.sink.processor import PROCESSOR
from streams.runtime.spec import NoSettings
from streams.runtime.testing import Harness
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

"""The sink loads audit.events into audit_events, one row per event, details as a map."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from processors.sink.processor import PROCESSOR
from streams.contracts.records import AuditEvent
from streams.runtime.spec import NoSettings
from streams.runtime.testing import Harness
from tests.support.warehouse import embedded_settings


def event(event_id: str, action: str, outcome: str, **details: str) -> AuditEvent:
    return AuditEvent(
        event_id=event_id,
        occurred_at=datetime(2026, 3, 1, 12, 0, int(event_id[-1]), tzinfo=UTC),
        actor="ops/sluice-admin",
        host="bastion-1",
        action=action,
        target="raw.support_tickets.dlq",
        outcome=outcome,
        details=details,
        sluice_version="0.1.0",
    )


def test_audit_events_land_in_their_table_in_order(tmp_path: Path) -> None:
    events = [
        event("e1", "dlq.replay", "failed", error_class="KafkaException"),
        event("e2", "dlq.replay", "ok", replayed="10", skipped="0"),
    ]
    with Harness(PROCESSOR, settings=embedded_settings(tmp_path), config=NoSettings()) as harness:
        out = harness.run(
            [harness.record("audit.events", e.to_avro(), key=e.action) for e in events]
        )
        assert out.dead_letters == []
        assert harness.ctx.resources.inserted == {"audit_events": 2}
        warehouse = harness.ctx.resources.warehouse
        assert warehouse is not None
        rows = warehouse.query(
            "SELECT event_id, actor, host, action, target, outcome, details, sluice_version, "
            "occurred_at FROM audit_events ORDER BY occurred_at"
        ).rows
    assert [row[:8] for row in rows] == [
        (
            "e1",
            "ops/sluice-admin",
            "bastion-1",
            "dlq.replay",
            "raw.support_tickets.dlq",
            "failed",
            {"error_class": "KafkaException"},
            "0.1.0",
        ),
        (
            "e2",
            "ops/sluice-admin",
            "bastion-1",
            "dlq.replay",
            "raw.support_tickets.dlq",
            "ok",
            {"replayed": "10", "skipped": "0"},
            "0.1.0",
        ),
    ]
    assert rows[0][8].replace(tzinfo=UTC) == events[0].occurred_at

"""Operator commands against the real stack leave AuditEvents on audit.events, and the sink
loads them into audit_events (embedded ClickHouse, queried through the sink that owns it)."""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.contracts.records import AuditEvent
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.stack.tenant_keys import tenant_signing_key
from streams.warehouse import clickhouse
from tests.support.world import World, make_world, process_log, read_all, running, wait_for

PAYLOAD = b'{"ticket_id": "TCK-00000001", "body": "call maria.garcia@example.com"}'


@pytest.fixture
def world(stack, tmp_path) -> World:
    world = make_world(stack, tmp_path)
    url = f"chdb://{tmp_path / 'clickhouse'}"
    settings = world.settings.model_copy(
        update={"clickhouse": world.settings.clickhouse.model_copy(update={"url": url})}
    )
    world.sandbox = dataclasses.replace(world.sandbox, settings=settings)
    return world


def sluice(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **world.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def audit_events(world: World, expect: int) -> list[AuditEvent]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.AuditEvent"]
    messages = read_all(world.settings, world.topic("audit.events"), expect, settle=1)
    for message in messages:
        assert b"maria.garcia" not in (message.value() or b""), "a payload in an audit event"
    return [
        AuditEvent.from_avro(serde.decode(m.value(), schema, topic="audit.events"))
        for m in messages
    ]


def audit_rows(world: World) -> list[dict]:
    """audit_events, through the sink that owns the embedded database ([] until it serves)."""
    owner = clickhouse.owner_file(Path(world.settings.clickhouse.url.removeprefix("chdb://")))
    if not owner.exists():  # opening it here would take it from the sink
        return []
    try:
        db = clickhouse.open_warehouse(world.settings, database=world.settings.clickhouse.database)
    except clickhouse.WarehouseError:
        return []
    try:
        return db.query(
            "SELECT event_id, action, target, outcome, actor, details FROM audit_events "
            "ORDER BY occurred_at"
        ).dicts()
    except clickhouse.WarehouseError:  # not migrated yet
        return []
    finally:
        db.close()


def test_schemas_apply_and_a_replay_are_on_the_trail_and_in_clickhouse(world: World):
    # Without ACLs: on a secured stack they add their own acl.apply event (test_acls.py).
    sluice(world, "schemas", "apply", "--no-acls")
    # A dead letter whose original topic is the world's raw topic, as validate writes one.
    producer = Producer(world.settings.kafka.client_config())
    producer.produce(
        world.dlq,
        value=PAYLOAD,
        headers=[
            ("sluice.error.topic", world.raw.encode()),
            ("sluice.error.class", b"ContractViolation"),
        ],
    )
    assert producer.flush(30) == 0
    assert "replayed 1 records" in sluice(world, "dlq", "replay", world.raw).stdout
    sluice(world, "dlq", "replay", world.raw, "--dry-run")  # changes nothing: not recorded

    events = audit_events(world, 2)
    assert [(e.action, e.outcome) for e in events] == [
        ("schemas.apply", "ok"),
        ("dlq.replay", "ok"),
    ]
    applied, replayed = events
    assert applied.target == world.settings.kafka.bootstrap_servers
    assert int(applied.details["topics.exists"]) >= len(world.catalog.topics)
    assert replayed.target == world.dlq
    assert replayed.details["replayed"] == "1"
    assert replayed.details["targets"] == f"{world.raw}=1"
    for event in events:
        assert event.actor.startswith(getpass.getuser())
        assert event.host == socket.gethostname()
        assert event.sluice_version

    with running(world, "sink"):
        wait_for(
            lambda: len(audit_rows(world)) >= 2,
            180,
            f"audit events in audit_events\n{process_log(world)[-3000:]}",
        )
        rows = audit_rows(world)
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("schemas.apply", "ok"),
        ("dlq.replay", "ok"),
    ]
    assert [r["event_id"] for r in rows] == [e.event_id for e in events]
    assert rows[1]["target"] == world.dlq
    assert rows[1]["details"]["replayed"] == "1"


def test_a_replay_that_cannot_be_audited_is_refused_before_it_sends(world: World):
    admin = kafka.admin(world.settings)
    topic = world.topic("audit.events")
    for future in admin.delete_topics([topic]).values():
        future.result()
    wait_for(lambda: kafka.missing_topics(admin, [topic]) == [topic], 30, "the topic to go")
    producer = Producer(world.settings.kafka.client_config())
    producer.produce(world.dlq, value=PAYLOAD, headers=[("sluice.error.topic", world.raw.encode())])
    assert producer.flush(30) == 0
    refused = subprocess.run(
        [sys.executable, "-m", "streams", "dlq", "replay", world.raw],
        env={**os.environ, **world.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    said = " ".join((refused.stdout + refused.stderr).split())
    assert "audit topic" in said and "sluice schemas apply" in said
    assert read_all(world.settings, world.raw, 0, settle=1) == [], "nothing was replayed"


def test_registering_and_rotating_a_tenant_are_on_the_trail(world: World):
    sluice(world, "schemas", "apply", "--no-acls")
    tenant = f"audit-{uuid.uuid4().hex[:8]}"
    sluice(world, "tenants", "add", tenant)
    sluice(world, "tenants", "rotate", tenant)

    events = audit_events(world, 3)[1:]  # after schemas.apply
    assert [(e.action, e.target, e.outcome) for e in events] == [
        ("tenants.add", tenant, "ok"),
        ("tenants.rotate", tenant, "ok"),
    ]
    assert events[0].details["registered"] == "True"
    assert len(events[1].details["key_ids"].split()) == 2  # the new key and the old one
    private = tenant_signing_key(world.settings, tenant)
    assert all(private not in str(e) for e in events), "a private key on the trail"

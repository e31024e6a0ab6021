"""schemas/acls.yaml on the secured stack: what apply grants, and what the broker then refuses.

These tests need the local stack with TLS, SASL/SCRAM and the StandardAuthorizer
(``allow.everyone.if.no.acl.found=false``); the test process itself talks to Kafka as a
super user, and clients of other principals get their credentials from
``tests.support.principals.as_principal``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streams.contracts.acls import AclNames, Grant, load_acls
from streams.contracts.records import AuditEvent
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.runtime.acls import existing_grants, grant_of
from streams.settings import Settings
from tests.support.principals import as_principal, drop_bindings_under, produce_one
from tests.support.world import World, make_world, read_all, wait_for


@pytest.fixture
def world(stack: Settings, tmp_path) -> Iterator[World]:
    world = make_world(stack, tmp_path)
    yield world
    drop_bindings_under(world.settings)  # the sandbox's own bindings go with it


def sluice(world: World, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **world.env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return " ".join((result.stdout + result.stderr).split())


def settles(settings: Settings, topic: str, *, allowed: bool) -> None:
    """Wait until a write to ``topic`` is allowed (or refused for authorization): a binding
    the controller committed reaches the broker's authorizer a moment later."""

    def as_expected() -> bool:
        error = produce_one(settings, topic)
        if allowed:
            return error is None
        return error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    wait_for(as_expected, 30, f"a write to {topic} to be {'allowed' if allowed else 'refused'}")


def declared(world: World) -> set[Grant]:
    catalog = world.catalog
    return set(load_acls(world.schemas, catalog).grants(catalog, AclNames.of(world.settings)))


def test_after_apply_guard_may_write_safe_and_a_tenant_may_not(world: World) -> None:
    sluice(world, "acl", "apply")
    safe = world.topic("inference.requests.safe")
    settles(as_principal(world.settings, "sluice-guard"), safe, allowed=True)
    tenant = as_principal(world.settings, "tenant-acme")
    # The tenant's credentials work: it may write requests...
    settles(tenant, world.topic("inference.requests"), allowed=True)
    # ...but never what infer trusts as guarded.
    refused = produce_one(tenant, safe)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def acl_events(world: World, expect: int) -> list[AuditEvent]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.AuditEvent"]
    messages = read_all(world.settings, world.topic("audit.events"), expect, settle=1)
    events = [
        AuditEvent.from_avro(serde.decode(m.value(), schema, topic="audit.events"))
        for m in messages
    ]
    return [e for e in events if e.action == "acl.apply"]


def test_a_second_apply_changes_nothing(world: World) -> None:
    first = sluice(world, "acl", "apply")
    assert "create" in first
    after_first = set(existing_grants(kafka.admin(world.settings)))
    assert declared(world) <= after_first
    second = sluice(world, "acl", "apply")
    assert "up to date" in second
    assert set(existing_grants(kafka.admin(world.settings))) == after_first
    applied, again = acl_events(world, 2)
    # Connect's bindings are shared by every sandbox: another test may have made them.
    assert 0 < int(applied.details["bindings.created"]) <= len(declared(world))
    assert again.details["bindings.created"] == again.details["bindings.deleted"] == "0"
    assert again.outcome == "ok"


def test_a_binding_added_by_hand_for_a_managed_principal_is_removed(world: World) -> None:
    sluice(world, "acl", "apply")
    safe = world.topic("inference.requests.safe")
    by_hand = AclBinding(
        ResourceType.TOPIC,
        safe,
        ResourcePatternType.LITERAL,
        "User:tenant-acme",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    unmanaged = AclBinding(
        ResourceType.TOPIC,
        safe,
        ResourcePatternType.LITERAL,
        "User:not-a-sluice-principal",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    admin = kafka.admin(world.settings)
    for future in admin.create_acls([by_hand, unmanaged]).values():
        future.result()
    tenant = as_principal(world.settings, "tenant-acme")
    settles(tenant, safe, allowed=True)  # the hand-made binding lets the tenant write

    output = sluice(world, "acl", "apply")
    assert "delete" in output
    have = set(existing_grants(admin))
    assert grant_of(by_hand) not in have
    assert grant_of(unmanaged) in have, "a principal the declaration does not name is left alone"
    settles(tenant, safe, allowed=False)

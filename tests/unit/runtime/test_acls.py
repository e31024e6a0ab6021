"""Grants to confluent-kafka bindings and back; applying a plan through the admin API."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streams.contracts.acls import AclPlan, Grant
from streams.runtime.acls import (
    AclError,
    AuthorizerDisabledError,
    apply_plan,
    binding_of,
    existing_grants,
    grant_of,
)
from tests.support.kafka_acls import FakeAclAdmin

SAFE = Grant("User:sluice-guard", "TOPIC", "sbx1.inference.requests.safe", "LITERAL", "WRITE")
TXN = Grant("User:sluice-guard", "TRANSACTIONAL_ID", "sbx1.guard.", "PREFIXED", "WRITE")
CLUSTER = Grant("User:sluice-connect", "CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE")


@pytest.mark.parametrize("grant", [SAFE, TXN, CLUSTER])
def test_a_grant_survives_the_round_trip_through_a_binding(grant: Grant) -> None:
    assert grant_of(binding_of(grant)) == grant


def test_the_cluster_is_confluent_kafkas_broker_resource() -> None:
    binding = binding_of(CLUSTER)
    assert binding.restype == ResourceType.BROKER
    assert binding.resource_pattern_type == ResourcePatternType.LITERAL


def test_bindings_an_operator_added_are_read_with_their_operation_and_permission() -> None:
    denied = AclBinding(
        ResourceType.TOPIC,
        "x",
        ResourcePatternType.PREFIXED,
        "User:tenant-acme",
        "10.0.0.1",
        AclOperation.ALL,
        AclPermissionType.DENY,
    )
    [grant] = existing_grants(FakeAclAdmin([denied]))
    assert grant == Grant("User:tenant-acme", "TOPIC", "x", "PREFIXED", "ALL", "DENY", "10.0.0.1")


def test_apply_creates_then_deletes_exactly_the_planned_bindings() -> None:
    stale = Grant("User:tenant-acme", "TOPIC", "sbx1.inference.requests.safe", "LITERAL", "WRITE")
    other = Grant("User:tenant-acme", "TOPIC", "sbx1.inference.requests", "LITERAL", "WRITE")
    admin = FakeAclAdmin([binding_of(stale), binding_of(other)])
    result = apply_plan(admin, AclPlan(create=[SAFE, TXN], delete=[stale], kept=[other]))
    assert admin.calls == ["create", "delete"], "never less than both declarations for a moment"
    assert result.created == [SAFE, TXN] and result.deleted == [stale] and not result.failed
    assert sorted(existing_grants(admin)) == sorted([SAFE, TXN, other])


def test_a_binding_the_broker_refuses_is_reported_and_the_rest_applied() -> None:
    admin = FakeAclAdmin()
    admin.refuse.add(TXN.name)
    result = apply_plan(admin, AclPlan(create=[SAFE, TXN], delete=[], kept=[]))
    assert result.created == [SAFE]
    [(grant, reason)] = result.failed
    assert grant == TXN and "refused by the test" in reason


def test_a_broker_without_an_authorizer_is_told_apart_from_a_refusal() -> None:
    with pytest.raises(AuthorizerDisabledError, match="no authorizer"):
        existing_grants(FakeAclAdmin(disabled=True))
    with pytest.raises(AuthorizerDisabledError):
        apply_plan(FakeAclAdmin(disabled=True), AclPlan(create=[SAFE], delete=[], kept=[]))
    assert issubclass(AuthorizerDisabledError, AclError)

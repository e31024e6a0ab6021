"""guard through Kafka: a request id is used once per tenant, across batches, keys and restarts.

meter counts a request once per request id, so copies that reuse one must never
reach a model: the first passes, the others land on inference.requests.blocked with
reason duplicate_request. guard rebuilds what it decided from its own outputs, so a
restart between two copies changes nothing; a request older than that window is
blocked as stale_request.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from tests.support import tenants
from tests.support.world import (
    World,
    committed_count,
    make_world,
    produce,
    read_all,
    running,
    wait_for,
)

GUARD_ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",
    "SLUICE_GUARD__HASH_SECRET": "integration-test-secret-0123456789",
}
TENANT = "acme"
SAFE = "inference.requests.safe"
BLOCKED = "inference.requests.blocked"
#: A large, harmless prompt: the kind of request worth replaying for free.
PROMPT = "Summarise the history of the printing press in detail. " * 60


@pytest.fixture
def world(stack, tmp_path) -> World:
    world = make_world(stack, tmp_path)
    tenants.register(world.settings, [TENANT, "globex"])  # guard reads the registry at start
    return world


def decided(world: World) -> int:
    return committed_count(world.settings, world.topic(SAFE)) + committed_count(
        world.settings, world.topic(BLOCKED)
    )


def outcomes(world: World, expect: int) -> tuple[list[dict], list[dict]]:
    """The decoded safe and blocked requests, once ``expect`` arrived in all (plus a settle)."""
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    wait_for(lambda: decided(world) >= expect, 300, f"guard to decide {expect} requests")
    safe = read_all(world.settings, world.topic(SAFE), 0, settle=3)
    # At least the rest are blocked; waiting for them (not for zero) keeps reading past the
    # first fetch, which over TLS may take longer than one poll.
    blocked = read_all(world.settings, world.topic(BLOCKED), expect - len(safe), settle=0)
    return (
        [serde.decode(m.value(), world.catalog.value_schema(SAFE)) for m in safe],
        [serde.decode(m.value(), world.catalog.value_schema(BLOCKED)) for m in blocked],
    )


def send(world: World, request: InferenceRequest) -> None:
    with tenants.client(world.settings, world.catalog, request.tenant_id) as client:
        client.send_request(request)


def test_ten_copies_of_one_request_id_pass_once(world: World):
    request = InferenceRequest.new(TENANT, "textgen", PROMPT)
    # Five through the SDK (keyed by request id: one partition), five with keys of their
    # own, so copies also arrive on other partitions and in other batches.
    with tenants.client(world.settings, world.catalog, TENANT) as client:
        for _ in range(5):
            client.send_request(request)
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder("inference.requests")
    value = encode(request.to_avro())
    keys = [f"other-key-{i}".encode() for i in range(5)]
    produce(
        world.settings,
        world.topic("inference.requests"),
        [value] * 5,
        keys,
        [tenants.signed_headers(world.settings, TENANT, key, value) for key in keys],
    )
    # Another tenant may use the same id: ids are unique per tenant.
    send(world, dataclasses.replace(request, tenant_id="globex"))

    with running(world, "guard", **GUARD_ENV):
        safe, blocked = outcomes(world, 11)

    assert sorted((r["tenant_id"], r["request_id"]) for r in safe) == [
        (TENANT, request.request_id),
        ("globex", request.request_id),
    ]
    assert len(blocked) == 9
    assert Counter(r["guard"]["reason"] for r in blocked) == {"duplicate_request": 9}
    assert {(r["tenant_id"], r["request_id"]) for r in blocked} == {(TENANT, request.request_id)}


def test_a_restart_between_two_copies_still_blocks_the_second(world: World):
    request = InferenceRequest.new(TENANT, "textgen", PROMPT)
    send(world, request)
    with running(world, "guard", **GUARD_ENV):
        safe, blocked = outcomes(world, 1)
    assert [r["request_id"] for r in safe] == [request.request_id] and blocked == []

    # A fresh process: it knows the id only from what it reads back from its outputs.
    send(world, request)
    with running(world, "guard", **GUARD_ENV):
        safe, blocked = outcomes(world, 2)
    assert [r["request_id"] for r in safe] == [request.request_id]
    assert [(r["request_id"], r["guard"]["reason"]) for r in blocked] == [
        (request.request_id, "duplicate_request")
    ]


def test_a_request_dated_two_days_ago_is_stale(world: World):
    old = dataclasses.replace(
        InferenceRequest.new(TENANT, "textgen", PROMPT),
        created_at=datetime.now(UTC) - timedelta(days=2),
    )
    fresh = InferenceRequest.new(TENANT, "textgen", PROMPT)
    send(world, old)
    send(world, fresh)
    with running(world, "guard", **GUARD_ENV):
        safe, blocked = outcomes(world, 2)
    assert [r["request_id"] for r in safe] == [fresh.request_id]
    assert [(r["request_id"], r["guard"]["reason"]) for r in blocked] == [
        (old.request_id, "stale_request")
    ]

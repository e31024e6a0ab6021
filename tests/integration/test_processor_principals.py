"""Least privilege in practice: each processor does its work under its own principal, and
that principal is refused whatever schemas/acls.yaml does not grant it.

The rest of the suite runs processors as the operator (see conftest.py): here a sandbox
applies its own ACLs (`sluice acl apply`, as the docs tell a deployment to) and starts
validate, guard, meter and the sink with ``SLUICE_STACK__PROCESSOR_PRINCIPALS=true``,
the local stack's default, so `sluice run` logs each in as sluice-<name>. The records
they read come from the tenants' own principals where the declaration has one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaError

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.gateway.key_store import KeyStore
from streams.runtime import kafka
from streams.settings import Settings
from tests.support import metering as m
from tests.support import tenants
from tests.support.principals import as_principal, drop_bindings_under, may_describe, produce_one
from tests.support.world import (
    World,
    process_log,
    processor_logs,
    produce,
    read_all,
    start_processor,
    stop_all,
    wait_for,
)

OWN_PRINCIPALS = {"SLUICE_STACK__PROCESSOR_PRINCIPALS": "true"}
GUARD_ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",  # patterns only: no Triton needed
    "SLUICE_GUARD__HASH_SECRET": "integration-test-secret-0123456789",
}
TENANT = "globex"
#: Per processor: a catalog topic its principal may not write (another processor's output).
NOT_ITS_OUTPUT = {
    "validate": "inference.requests.safe",  # only guard vouches for what infer reads
    "guard": "inference.responses",  # only infer answers
    "meter": "inference.results",  # only guard stores results
    "sink": "metering.usage",  # the sink only loads, and dead-letters
}


@pytest.fixture
def world(stack: Settings, tmp_path: Path) -> Iterator[World]:
    """A sandbox with its own ClickHouse, whose ACLs are applied, and removed after."""
    world = m.metering_world(stack, tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "streams", "acl", "apply"],
            env={**os.environ, **world.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield world
    finally:
        stop_all(world)
        drop_bindings_under(world.settings)


def principal(name: str) -> str:
    return f"sluice-{name}"


def wait_granted(world: World, name: str, topic: str) -> None:
    """Until the broker shows ``topic`` to ``name``'s principal: its bindings arrived."""
    settings = as_principal(world.settings, principal(name))
    wait_for(lambda: may_describe(settings, world.topic(topic)), 30, f"{name}'s grant on {topic}")


def tickets(good_ticket: Any, count: int, **changes: Any) -> list[bytes]:
    return [
        json.dumps(good_ticket(ticket_id=f"TCK-{i:08d}", **changes)).encode() for i in range(count)
    ]


def test_each_processor_works_under_its_own_principal_and_no_further(
    world: World, good_ticket: Any
) -> None:
    for name, topic in [
        ("validate", "raw.support_tickets"),
        ("guard", "inference.requests"),
        ("meter", "inference.results"),
        ("sink", "metering.usage"),
    ]:
        wait_granted(world, name, topic)
    tenants.register(world.settings, [TENANT])  # guard reads the registry when it starts
    for name in ("validate", "meter", "sink"):
        start_processor(world, name, **OWN_PRINCIPALS)
    start_processor(world, "guard", **OWN_PRINCIPALS, **GUARD_ENV)

    # validate: a tenant's raw tickets, as the tenant's own principal; the bad ones dead-lettered.
    acme = as_principal(world.settings, "tenant-acme")
    produce(acme, world.raw, tickets(good_ticket, 20))
    produce(acme, world.raw, tickets(good_ticket, 5, satisfaction=11))  # breaks the contract
    assert len(read_all(world.settings, world.validated, 20)) == 20
    assert len(read_all(world.settings, world.dlq, 5)) == 5

    # guard: requests the tenant signed, on its own principal, reach the guarded topic.
    requests = [InferenceRequest.new(TENANT, "textgen", f"What is {i} + {i}?") for i in range(5)]
    with tenants.client(as_principal(world.settings, "tenant-globex"), world.catalog, TENANT) as c:
        for request in requests:
            c.send_request(request)
    safe = read_all(world.settings, world.topic("inference.requests.safe"), len(requests))
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.value_schema("inference.requests.safe")
    guarded = {serde.decode(r.value(), schema)["request_id"] for r in safe}
    assert guarded == {r.request_id for r in requests}

    # meter prices results into metering.usage, which the sink loads into ClickHouse.
    names = m.tenants(2)
    results = m.synthetic_results(names, 40, start=m.recent_start(timedelta(minutes=1)))
    m.send_results(world.settings, serde, results)
    in_list = m.in_list(names)

    def loaded() -> bool:
        try:
            query = f"SELECT count() FROM usage FINAL WHERE tenant_id IN {in_list}"
            return int(m.query(world.settings, query)[0][0]) == len(results)
        except Exception:  # the sink may not have made its tables yet
            return False

    wait_for(loaded, 180, f"{len(results)} usage events metered and loaded")

    # Every one of them really was its own principal, and is still running.
    for name in ("validate", "guard", "meter", "sink"):
        (log,) = processor_logs(world, name)
        assert f"as Kafka user {principal(name)}" in " ".join(log.split()), log[-2000:]
    alive = [p.poll() is None for p in world.processes]
    assert all(alive), process_log(world)[-4000:]

    # The same credentials are refused what another processor owns.
    for name, topic in NOT_ITS_OUTPUT.items():
        refused = produce_one(as_principal(world.settings, principal(name)), world.topic(topic))
        assert refused is not None, f"{principal(name)} may write {topic}"
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused


def test_the_gateway_works_under_its_own_principal_and_no_further(world: World) -> None:
    """sluice-gateway reads the outcome topics and writes signed requests, and nothing else.

    No guard runs: the call times out (504) once its request is on inference.requests,
    which is what the gateway's grants are for. The round trip through guard and infer is
    tests/integration/test_gateway.py's.
    """
    pytest.importorskip("uvicorn", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")
    for topic in ("inference.results", "inference.requests.blocked", "inference.requests"):
        wait_granted(world, "gateway", topic)
    tenants.register(world.settings, [TENANT])  # the gateway signs with the tenant's key
    created = KeyStore(world.settings.stack.root / "secrets").create(
        TENANT, {TENANT}, user="integration-suite", priority="normal", name="principal test"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    start_processor(
        world,
        "gateway",
        **OWN_PRINCIPALS,
        SLUICE_GATEWAY__PORT=str(port),
        SLUICE_GATEWAY__REQUEST_TIMEOUT_S="5",
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    # Ready means its consumer was positioned on both outcome topics, as sluice-gateway.
    wait_for(ready, 120, "the gateway ready under its own principal")
    started = time.monotonic()
    answer = httpx.post(
        f"{base}/v1/embeddings",
        json={"model": "minilm", "input": "hello"},
        headers={"Authorization": f"Bearer {created.key}"},
        timeout=30,
    )
    assert answer.status_code == 504, answer.text  # produced, then no outcome: no guard
    assert time.monotonic() - started >= 4
    [request] = read_all(world.settings, world.topic("inference.requests"), 1)
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    record = serde.decode(request.value(), world.catalog.value_schema("inference.requests"))
    assert record["tenant_id"] == TENANT
    assert request.key() == record["request_id"].encode()
    (log,) = processor_logs(world, "gateway")
    assert "as Kafka user sluice-gateway" in " ".join(log.split()), log[-2000:]

    # The same credentials may not write what guard alone writes.
    gateway = as_principal(world.settings, principal("gateway"))
    for topic in ("inference.results", "inference.requests.safe"):
        refused = produce_one(gateway, world.topic(topic))
        assert refused is not None, f"sluice-gateway may write {topic}"
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused

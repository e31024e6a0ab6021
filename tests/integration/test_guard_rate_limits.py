"""guard through Kafka: each tenant's rate limit holds for Kafka-native producers too.

A tenant allowed 5 requests per minute (SLUICE_GUARD__RATE_LIMITS_FILE) sends 12 signed
requests straight to inference.requests, another tenant 3: guard passes 5 of the first
(its bucket starts with a whole minute) and blocks the other 7 with reason
rate_limited, their text withheld; the other tenant's requests all pass, its bucket
being its own. guard checks the requests in a few seconds, far less than the 12 s one
request of allowance takes to come back.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from tests.support import tenants
from tests.support.world import World, committed_count, make_world, read_all, running, wait_for

SAFE = "inference.requests.safe"
BLOCKED = "inference.requests.blocked"
PROMPT = "Summarise the history of the printing press in three sentences."


@pytest.fixture
def limited() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"tenant-{tag}-limited", f"tenant-{tag}-other"


@pytest.fixture
def world(stack, tmp_path, limited) -> World:
    world = make_world(stack, tmp_path)
    tenants.register(world.settings, limited)  # guard reads the registry at start
    return world


def guard_env(tmp_path: Path, tenant: str) -> dict[str, str]:
    limits = tmp_path / "rate_limits.yaml"
    # No default: only the limited tenant has a limit.
    limits.write_text(f"tenants:\n  {tenant}:\n    requests_per_minute: 5\n", encoding="utf-8")
    return {
        "SLUICE_GUARD__EMBEDDER": "none",
        "SLUICE_GUARD__HASH_SECRET": "integration-test-secret-0123456789",
        # Budgets play no part here; without them no batch waits on the budget view.
        "SLUICE_GUARD__BUDGETS": "off",
        "SLUICE_GUARD__RATE_LIMITS_FILE": str(limits),
    }


def decided(world: World) -> int:
    return committed_count(world.settings, world.topic(SAFE)) + committed_count(
        world.settings, world.topic(BLOCKED)
    )


def outcomes(world: World, expect: int) -> tuple[list[dict], list[dict]]:
    """The decoded safe and blocked requests, once ``expect`` arrived in all (plus a settle)."""
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    wait_for(lambda: decided(world) >= expect, 300, f"guard to decide {expect} requests")
    safe = read_all(world.settings, world.topic(SAFE), 0, settle=3)
    blocked = read_all(world.settings, world.topic(BLOCKED), expect - len(safe), settle=0)
    return (
        [serde.decode(m.value(), world.catalog.value_schema(SAFE)) for m in safe],
        [serde.decode(m.value(), world.catalog.value_schema(BLOCKED)) for m in blocked],
    )


def test_a_tenant_over_its_requests_per_minute_is_rate_limited_and_another_is_not(
    world: World, tmp_path: Path, limited: tuple[str, str]
):
    flooding, other = limited
    sent: dict[str, list[str]] = {flooding: [], other: []}
    for tenant, count in ((flooding, 12), (other, 3)):
        with tenants.client(world.settings, world.catalog, tenant) as client:
            for _ in range(count):
                request = InferenceRequest.new(tenant, "textgen", PROMPT)
                client.send_request(request)
                sent[tenant].append(request.request_id)

    with running(world, "guard", **guard_env(tmp_path, flooding)):
        safe, blocked = outcomes(world, 15)

    assert Counter(r["tenant_id"] for r in safe) == {flooding: 5, other: 3}
    assert len(blocked) == 7
    assert {r["tenant_id"] for r in blocked} == {flooding}
    assert Counter(r["guard"]["reason"] for r in blocked) == {"rate_limited": 7}
    assert {r["request_id"] for r in safe + blocked} == set(sent[flooding] + sent[other])
    assert all(PROMPT not in r["input_text"] for r in blocked), "never analysed: withheld"

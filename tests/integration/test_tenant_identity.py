"""A request's tenant is the one whose key signed it, on the real stack (guard via `sluice run`).

guard gets the local stack's tenant registry from `sluice run` (as in production it
gets SLUICE_GUARD__TENANTS_PATH); each test registers its tenants before guard starts,
since guard reads the registry once.
"""

from __future__ import annotations

import pytest

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.runtime.dead_letters import parse_error_headers
from streams.runtime.sealing import Keyring, sealed_key_id
from streams.settings import DeadLetterSettings, Settings
from streams.stack.secrets import local_dead_letter_key
from tests.support import metering as m
from tests.support import tenants
from tests.support.world import (
    World,
    make_world,
    process_log,
    produce,
    read_all,
    running_all,
    start_processor,
    stop_all,
)

GUARD_ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",
    "SLUICE_GUARD__HASH_SECRET": "tenant-identity-secret-0123456789",
}
REQUESTS = "inference.requests"


def decoded(world: World, topic: str, expect: int, timeout: float = 180) -> list[dict]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.value_schema(topic)
    messages = read_all(world.settings, world.topic(topic), expect, timeout=timeout)
    return [serde.decode(message.value(), schema) for message in messages]


def encoded_request(world: World, request: InferenceRequest) -> bytes:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    return serde.encoder(REQUESTS)(request.to_avro())


@pytest.fixture
def world(stack: Settings, tmp_path) -> World:
    return make_world(stack, tmp_path)


@pytest.fixture
def triton_world(triton: Settings, tmp_path) -> World:
    return make_world(triton, tmp_path)


def test_a_spoofed_tenant_is_blocked_and_never_metered_to_the_claimed_tenant(
    triton_world: World,
) -> None:
    world = triton_world
    signer, victim = m.tenants(2)
    tenants.register(world.settings, [signer, victim])
    honest = InferenceRequest.new(signer, "textgen", "What is the capital of France?", max_tokens=4)
    spoof = InferenceRequest.new(victim, "textgen", "Bill this to someone else", max_tokens=4)
    spoof_bytes = encoded_request(world, spoof)
    with running_all(world, ["guard", "infer", "meter"], **GUARD_ENV):
        with tenants.client(world.settings, world.catalog, signer) as client:
            client.send_request(honest)
        # The signer's own key, the victim's tenant_id: what a client library refuses to do.
        produce(
            world.settings,
            world.topic(REQUESTS),
            [spoof_bytes],
            keys=[spoof.request_id.encode()],
            headers=[tenants.signed_headers(world.settings, signer, spoof.request_id, spoof_bytes)],
        )
        [blocked] = decoded(world, "inference.requests.blocked", 1)
        usage = decoded(world, "metering.usage", 1, timeout=300)
    assert blocked["request_id"] == spoof.request_id, process_log(world)[-3000:]
    assert (blocked["tenant_id"], blocked["guard"]["reason"]) == (signer, "tenant_mismatch")
    assert (
        victim.encode()
        not in read_all(world.settings, world.topic("inference.requests.blocked"), 1, settle=0.5)[
            0
        ].value()
    )
    assert {u["tenant_id"] for u in usage} == {signer}
    assert {u["request_id"] for u in usage} == {honest.request_id}
    safe = decoded(world, "inference.requests.safe", 1)
    assert [s["request_id"] for s in safe] == [honest.request_id]


def test_an_unsigned_request_is_dead_lettered_with_its_original_bytes(world: World) -> None:
    [tenant] = m.tenants(1)
    tenants.register(world.settings, [tenant])
    request = InferenceRequest.new(tenant, "textgen", "hello")
    raw = encoded_request(world, request)
    start_processor(world, "guard", **GUARD_ENV)
    try:
        produce(world.settings, world.topic(REQUESTS), [raw], keys=[request.request_id.encode()])
        [letter] = read_all(world.settings, world.topic("inference.requests.dlq"), 1, timeout=180)
    finally:
        stop_all(world)
    headers = letter.headers() or []
    info = parse_error_headers(headers)
    assert (info.error_class, info.stage) == ("UnauthenticatedRequest", "authenticate")
    assert letter.key() == request.request_id.encode()
    # Prompts' dead letters are encrypted with the stack's key; inside: the bytes as sent.
    [key] = local_dead_letter_key(world.settings).values()
    keys = Keyring.from_settings(DeadLetterSettings.model_validate({"encryption_key": key}))
    assert sealed_key_id(headers) is not None
    assert keys.open(letter.value(), headers) == raw
    assert (
        read_all(world.settings, world.topic("inference.requests.safe"), 0, timeout=5, settle=1)
        == []
    )


def test_northbank_is_refused_whoever_signs(world: World) -> None:
    # `northbank` has a policy and a key (sluice up registers it); `NorthBank` has neither.
    tenants.register(world.settings, ["northbank"])
    mismatched = InferenceRequest.new("NorthBank", "textgen", "hello")
    raw = encoded_request(world, mismatched)
    with running_all(world, ["guard"], **GUARD_ENV):
        produce(
            world.settings,
            world.topic(REQUESTS),
            [raw],
            keys=[mismatched.request_id.encode()],
            headers=[
                tenants.signed_headers(world.settings, "northbank", mismatched.request_id, raw)
            ],
        )
        [blocked] = decoded(world, "inference.requests.blocked", 1)
    assert (blocked["tenant_id"], blocked["guard"]["reason"]) == ("northbank", "tenant_mismatch")
    assert (
        read_all(world.settings, world.topic("inference.requests.safe"), 0, timeout=5, settle=1)
        == []
    )

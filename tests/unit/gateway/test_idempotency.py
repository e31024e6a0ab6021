"""Idempotency keys: derived request ids, body fingerprints, and the bounded memories."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from streams.gateway.errors import OpenAIError
from streams.gateway.idempotency import (
    NAMESPACE,
    KeyMemory,
    OutcomeCache,
    fingerprint,
    is_derived,
    parse_key,
    request_ids,
)
from streams.gateway.settings import GatewaySettings


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_request_ids_are_uuid5_of_tenant_body_key_and_index_and_never_change():
    body = fingerprint("/v1/embeddings", {"model": "minilm", "input": ["a", "b"]})
    ids = request_ids("acme", "key-1", body, 2)
    assert ids == request_ids("acme", "key-1", body, 2)
    assert ids[0] == str(uuid.uuid5(NAMESPACE, f"acme\n{body}\nkey-1\n0"))
    assert all(uuid.UUID(i).version == 5 for i in ids) and ids[0] != ids[1]
    # Pinned: a change of namespace or layout would turn every retry into a new request.
    assert uuid.UUID("5c1ce0a1-6d2b-4c6e-9f0a-1de4907e0c75") == NAMESPACE
    others = [
        request_ids("globex", "key-1", body, 1),
        request_ids("acme", "key-2", body, 1),
        request_ids("acme", "key-1", fingerprint("/v1/embeddings", {"input": "c"}), 1),
    ]
    assert all(other[0] != ids[0] for other in others)


def test_the_fingerprint_is_of_the_canonical_json_and_the_route():
    one = fingerprint("/v1/embeddings", {"model": "m", "input": ["a"], "user": None})
    assert one == fingerprint("/v1/embeddings", {"user": None, "input": ["a"], "model": "m"})
    assert one != fingerprint("/v1/completions", {"model": "m", "input": ["a"], "user": None})
    assert one != fingerprint("/v1/embeddings", {"model": "m", "input": ["a "], "user": None})
    assert len(one) == 64


def test_derived_ids_are_told_from_fresh_ones_by_their_version():
    assert is_derived(request_ids("acme", "k", "f", 1)[0])
    assert not is_derived(str(uuid.uuid4()))
    assert not is_derived("not-a-uuid")


@pytest.mark.parametrize("value", ["a", "~" * 255, "order 42/retry:1"])
def test_printable_ascii_keys_of_1_to_255_characters_are_taken(value):
    assert parse_key(value) == value
    assert parse_key(None) is None


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "line\nbreak", "\x7f"])
def test_other_keys_are_refused_without_being_echoed(value):
    with pytest.raises(OpenAIError) as refused:
        parse_key(value)
    assert refused.value.status == 400 and refused.value.param == "Idempotency-Key"
    if value:
        assert value not in refused.value.message


def test_a_key_remembered_with_one_body_refuses_another_until_the_window_ends():
    clock = Clock()
    memory = KeyMemory(window_s=60, max_entries=10, clock=clock)
    memory.check("acme", "k", "body-1")
    memory.check("acme", "k", "body-1")  # a retry
    memory.check("globex", "k", "body-2")  # another tenant's key of the same name
    with pytest.raises(OpenAIError) as refused:
        memory.check("acme", "k", "body-2")
    assert (refused.value.status, refused.value.code) == (409, "idempotency_key_reused")
    clock.now += 61
    memory.check("acme", "k", "body-2")  # forgotten: its ids differ anyway
    assert len(memory) == 1


def test_the_key_memory_keeps_at_most_its_bound_oldest_leaving_first():
    memory = KeyMemory(window_s=60, max_entries=3, clock=Clock())
    for index in range(5):
        memory.check("acme", f"k{index}", "body")
    assert len(memory) == 3
    memory.check("acme", "k0", "other body")  # k0 left: not recognised any more
    with pytest.raises(OpenAIError):
        memory.check("acme", "k4", "other body")


def test_the_outcome_cache_keeps_records_for_the_window_by_their_kafka_time():
    clock = Clock()
    cache = OutcomeCache(window_s=60, max_entries=100, clock=clock)
    now_ms = int(clock.now * 1000)
    cache.put("fresh", "inference.results", b"r1", now_ms - 1_000)
    cache.put("too-old", "inference.results", b"r0", now_ms - 61_000)  # read while catching up
    cache.put("no-time", "inference.requests.blocked", b"b1", None)
    assert [r.value for r in cache.get("fresh")] == [b"r1"]
    assert cache.get("too-old") == [] and len(cache) == 2
    assert cache.get("no-time")[0].topic == "inference.requests.blocked"
    clock.now += 59.5
    assert cache.get("fresh") == [] and cache.get("no-time")
    cache.put("later", "inference.results", b"r2", None)  # expires the first from the front
    assert len(cache) == 2


def test_the_outcome_cache_is_bounded_in_ids_and_in_records_per_id():
    clock = Clock()
    cache = OutcomeCache(window_s=60, max_entries=3, clock=clock)
    for index in range(5):
        cache.put(f"id-{index}", "inference.results", b"v", None)
    assert len(cache) == 3 and cache.evicted == 2
    assert cache.get("id-0") == [] and cache.get("id-4")
    for copy in range(10):  # the retries' duplicate blocks cannot grow one id without bound
        cache.put("id-4", "inference.requests.blocked", bytes([copy]), None)
    assert len(cache.get("id-4")) == 4
    assert cache.get("id-4")[0].topic == "inference.results"  # the first read stays


def test_a_cache_without_a_window_keeps_nothing():
    cache = OutcomeCache(window_s=0, max_entries=10)
    cache.put("id", "inference.results", b"v", None)
    assert len(cache) == 0


def test_the_idempotency_window_cannot_outlast_guards_default_request_id_window():
    assert GatewaySettings().idempotency_window_s == 600
    assert GatewaySettings(idempotency_window_s=0).idempotency_window_s == 0
    with pytest.raises(ValidationError, match="idempotency_window_s"):
        GatewaySettings(idempotency_window_s=21_601)

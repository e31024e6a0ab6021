"""Weighted fair scheduling in guard and infer, on the real stack, for Kafka-native producers.

Tenant A floods 5,000 requests straight to Kafka; tenant B sends 50 afterwards, while
the processor works through A's backlog. With equal shares, self-clocked fair queuing
takes B's k-th record within the next 2k records once B's records are in the read-ahead
window, so the bound stated here, in records rather than seconds (machines here are
noisy), is: while B's 50 go through, at most 50 of A's are committed, plus four
batches: the one in hand when B's records are produced, up to two more while the
consumer fetches them in the background and the next loop reads them into the window,
and one of lag in the reader that watches. Without fair scheduling B waits behind all
of A's 5,000. B must also finish before A's backlog does.

guard then dies by SIGKILL while B's records are committed ahead of some of A's (the
commit point of a partition is behind records already done); a new guard finishes the
stream, skipping what the commit metadata says is done: every request is decided
exactly once.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterable

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.settings import Settings
from tests.support import metering as m
from tests.support import tenants, verdicts
from tests.support.world import World, make_world, produce, start_infer, start_processor, stop_all

FLOOD = 5_000
LATE = 50
REQUESTS = "inference.requests"
SAFE = "inference.requests.safe"
BLOCKED = "inference.requests.blocked"
RESPONSES = "inference.responses"
GUARD_BATCH = 128  # guard's max_records_per_poll default
INFER_BATCH = 64
GUARD_ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",
    "SLUICE_GUARD__HASH_SECRET": "fair-scheduling-secret-0123456789abcdef",
    "SLUICE_GUARD__BUDGETS": "off",
    "SLUICE_GUARD__RATE_LIMITS": "off",
}


def bound(batch: int) -> int:
    """A's records that may be committed while B's go through (see the module's doc)."""
    return LATE + 4 * batch


class CommitWatcher:
    """Request ids of ``topics`` in the order a read_committed reader first sees them."""

    def __init__(self, world: World, topics: Iterable[str]) -> None:
        self.consumer = Consumer(
            world.settings.kafka.client_config(
                **{
                    "group.id": f"reader-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 50,
                }
            )
        )
        assignment = []
        for logical in topics:
            topic = world.topic(logical)
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assignment += [TopicPartition(topic, p, 0) for p in partitions]
        self.consumer.assign(assignment)
        self.seen: list[str] = []

    def until(self, done: set[str], timeout: float) -> None:
        """Read until every id of ``done`` was seen (or the timeout)."""
        deadline = time.monotonic() + timeout
        missing = set(done) - set(self.seen)
        while missing and time.monotonic() < deadline:
            for message in self.consumer.consume(1000, 0.1):
                if message.error() is None:
                    key = (message.key() or b"").decode()
                    self.seen.append(key)
                    missing.discard(key)
        assert not missing, f"{len(missing)} requests not committed after {timeout:.0f}s"

    def close(self) -> None:
        self.consumer.close()


def guard_requests(world: World, tenant: str, count: int) -> list[str]:
    """``count`` requests of ``tenant`` produced to inference.requests, signed by it."""
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(REQUESTS)
    requests = [
        InferenceRequest.new(tenant, "minilm", f"Ticket {i}: the printer on floor 3 jams.")
        for i in range(count)
    ]
    values = [encode(r.to_avro()) for r in requests]
    keys = [r.request_id.encode() for r in requests]
    headers = [
        tenants.signed_headers(world.settings, tenant, key, value)
        for key, value in zip(keys, values, strict=True)
    ]
    produce(world.settings, world.topic(REQUESTS), list(values), list(keys), headers)
    return [r.request_id for r in requests]


def safe_requests(world: World, tenant: str, count: int) -> list[str]:
    """``count`` embeddings of ``tenant`` on inference.requests.safe, signed as guard signs."""
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(SAFE)
    requests = [
        verdicts.passed(InferenceRequest.new(tenant, "minilm", f"Sentence number {i}."))
        for i in range(count)
    ]
    values = [encode(r.to_avro()) for r in requests]
    keys = [r.request_id.encode() for r in requests]
    headers = [
        verdicts.signed_headers(world.settings, SAFE, key, value)
        for key, value in zip(keys, values, strict=True)
    ]
    produce(world.settings, world.topic(SAFE), list(values), list(keys), headers)
    return [r.request_id for r in requests]


def a_done_while_b_went_through(seen: list[str], a_ids: set[str], b_ids: set[str]) -> int:
    """A's records committed after B's first record was produced and before B's last."""
    last_b = max(i for i, key in enumerate(seen) if key in b_ids)
    return sum(1 for key in seen[: last_b + 1] if key in a_ids)


@pytest.fixture
def world(stack: Settings, tmp_path) -> World:
    return make_world(stack, tmp_path)


@pytest.mark.slow
def test_guard_serves_a_late_tenant_before_a_flood_and_a_crash_decides_each_once(world: World):
    flooding, late = m.tenants(2)
    tenants.register(world.settings, [flooding, late])  # before guard starts: read once
    watcher = CommitWatcher(world, [SAFE, BLOCKED])
    first = start_processor(world, "guard", **GUARD_ENV)
    try:
        a_ids = set(guard_requests(world, flooding, FLOOD))
        a_before_b = len([k for k in _drain(watcher) if k in a_ids])
        b_ids = set(guard_requests(world, late, LATE))
        watcher.until(b_ids, timeout=300)
        a_done = a_done_while_b_went_through(watcher.seen, a_ids, b_ids) - a_before_b
        print(f"guard: {a_done} of A's requests went through while B's {LATE} did")
        assert a_done <= bound(GUARD_BATCH), (
            f"{a_done} of A's requests went through while B's {LATE} did"
        )
        assert len(set(watcher.seen) & a_ids) < FLOOD, "B must finish before A's backlog"

        first.send_signal(signal.SIGKILL)  # some of A's records are behind B's done ones
        first.wait(10)
        assert len(set(_drain(watcher)) & a_ids) < FLOOD, "the kill must land mid-backlog"
        start_processor(world, "guard", **GUARD_ENV)
        watcher.until(a_ids | b_ids, timeout=600)
        time.sleep(3)  # a duplicate would come now
        _drain(watcher)
    finally:
        watcher.close()
        stop_all(world)
    counts = Counter(watcher.seen)
    assert set(counts) == a_ids | b_ids
    assert [k for k, n in counts.items() if n > 1] == [], "a request was decided twice"


@pytest.mark.slow
def test_infer_serves_a_late_tenant_before_another_tenants_backlog(triton: Settings, tmp_path):
    world = make_world(triton, tmp_path)
    flooding, late = m.tenants(2)
    watcher = CommitWatcher(world, [RESPONSES])
    start_infer(
        world,
        SLUICE_INFER__LANE="embeddings",
        SLUICE_INFER__MAX_RECORDS_PER_POLL=str(INFER_BATCH),
        SLUICE_INFER__CACHE_MAX_ENTRIES="0",
    )
    try:
        a_ids = set(safe_requests(world, flooding, FLOOD))
        a_before_b = len([k for k in _drain(watcher) if k in a_ids])
        b_ids = set(safe_requests(world, late, LATE))
        watcher.until(b_ids, timeout=300)
    finally:
        watcher.close()
        stop_all(world)
    a_done = a_done_while_b_went_through(watcher.seen, a_ids, b_ids) - a_before_b
    print(f"infer: {a_done} of A's requests went through while B's {LATE} did")
    assert a_done <= bound(INFER_BATCH), f"{a_done} of A's requests went through while B's did"
    assert len(set(watcher.seen) & a_ids) < FLOOD, "B must finish before A's backlog"


def _drain(watcher: CommitWatcher) -> list[str]:
    """Whatever is committed by now, read; every id seen so far."""
    watcher.until(set(), timeout=0)
    for _ in range(5):
        for message in watcher.consumer.consume(1000, 0.2):
            if message.error() is None:
                watcher.seen.append((message.key() or b"").decode())
    return watcher.seen

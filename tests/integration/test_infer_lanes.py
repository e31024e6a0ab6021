"""infer's lanes on the real stack: embeddings are committed without waiting for generations.

guard, infer for the default lane (textgen) and infer for the embeddings lane
(``SLUICE_INFER__LANE=embeddings``: minilm) run as `sluice run` processes. Slow
generations are queued first, then embeddings; both infers start only once guard has
put all of them on inference.requests.safe, so a single infer would take them in one
poll and commit every result in one transaction. With lanes, the embeddings lane
commits its results while generations are still running: what a read_committed
reader sees first says so (the order of commit visibility, not a timing threshold).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.settings import Settings
from tests.support import metering as m
from tests.support import tenants
from tests.support.world import (
    World,
    committed_count,
    make_world,
    read_all,
    start_processor,
    stop_all,
    wait_for,
)

GUARD_ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",
    "SLUICE_GUARD__HASH_SECRET": "infer-lanes-secret-0123456789abcdef",
}
GENERATIONS = 8
EMBEDDINGS = 40
#: Long enough that generating takes seconds on a CPU, within textgen's output limit.
MAX_TOKENS = 384


@pytest.fixture
def world(triton: Settings, tmp_path) -> World:
    return make_world(triton, tmp_path)


def _visible_in_commit_order(world: World, expect: int, timeout: float = 600) -> list[str]:
    """Request ids of inference.responses in the order a read_committed reader first sees them.

    A record is fetchable only once its transaction committed: polling all the time,
    the reader sees a lane's results when that lane commits them.
    """
    topic = world.topic("inference.responses")
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.value_schema("inference.responses")
    consumer = Consumer(
        world.settings.kafka.client_config(
            **{
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 50,
            }
        )
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < expect and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.1):
                if message.error() is None:
                    seen.append(serde.decode(message.value(), schema)["request_id"])
    finally:
        consumer.close()
    return seen


def test_embeddings_are_committed_before_the_generations_each_request_once(world: World):
    [tenant] = m.tenants(1)
    tenants.register(world.settings, [tenant])
    generations = [
        InferenceRequest.new(
            tenant, "textgen", f"Tell a long story, part {i}", max_tokens=MAX_TOKENS
        )
        for i in range(GENERATIONS)
    ]
    embeddings = [
        InferenceRequest.new(tenant, "minilm", f"a sentence to embed, number {i}")
        for i in range(EMBEDDINGS)
    ]
    everything = [*generations, *embeddings]
    try:
        start_processor(world, "guard", **GUARD_ENV)
        with tenants.client(world.settings, world.catalog, tenant) as client:
            for request in everything:  # generations first, as the slow work queued ahead
                client.send_request(request)
        wait_for(
            lambda: (
                committed_count(world.settings, world.topic("inference.requests.safe"))
                >= len(everything)
            ),
            180,
            "guard to pass every request to inference.requests.safe",
        )
        start_processor(world, "infer", SLUICE_INFER__LANE="default")
        start_processor(world, "infer", SLUICE_INFER__LANE="embeddings")
        order = _visible_in_commit_order(world, len(everything))
        stored = read_all(world.settings, world.topic("inference.results"), len(everything))
    finally:
        stop_all(world)

    # Exactly one result per request, from infer and after guard's output check.
    assert Counter(order) == Counter(r.request_id for r in everything), "one response each"
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.value_schema("inference.results")
    results = [serde.decode(message.value(), schema) for message in stored]
    counts = Counter(r["request_id"] for r in results)
    assert set(counts) == {r.request_id for r in everything}, "a request has no result"
    assert max(counts.values()) == 1, "a request got two results"
    assert {r["status"] for r in results} == {"ok"}
    assert {
        r["model"] for r in results if r["request_id"] in {e.request_id for e in embeddings}
    } == {"minilm"}

    # The embeddings lane committed every embedding before the last generation was visible.
    position = {request_id: index for index, request_id in enumerate(order)}
    last_embedding = max(position[r.request_id] for r in embeddings)
    last_generation = max(position[r.request_id] for r in generations)
    assert last_embedding < last_generation, (
        "the embeddings waited for the generations' transaction"
    )

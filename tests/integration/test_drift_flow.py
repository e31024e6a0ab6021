"""drift through Kafka: planted shifts alert once, within a bound, across two kill -9 restarts."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from confluent_kafka import Producer, TopicPartition

from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from tests.support.drift_streams import results, tickets
from tests.support.world import (
    World,
    make_world,
    process_log,
    read_all,
    start_processor,
    stop_all,
    wait_for,
)

TICKETS = 16_000
TICKET_SHIFT = 8_000
RESULTS = 8_000
RESULT_SHIFT = 6_000
#: Values after the shift within which the alert must come (tests/unit measure ~100-200).
BOUND = 400
DRIFT_ENV = {"SLUICE_RUNNER__BATCH_SIZE": "200", "SLUICE_RUNNER__TRANSACTION_TIMEOUT_MS": "5000"}


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def send(world: World, topic: str, values: list[dict], key_field: str) -> None:
    """Encode as the registry says and write everything to partition 0, in order."""
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(topic)
    producer = Producer(world.settings.kafka.client_config(**{"enable.idempotence": True}))
    physical = world.topic(topic)
    for value in values:
        while True:
            try:
                producer.produce(physical, encode(value), key=str(value[key_field]), partition=0)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def meta(index: int) -> dict:
    return {
        "event_id": f"ev-{index}",
        "source": "test",
        "raw_topic": "raw.support_tickets",
        "raw_partition": 0,
        "raw_offset": index,
        "contract_version": 1,
        "validated_at": 0,
    }


def committed_offset(world: World, topic: str) -> int:
    group = f"{world.settings.runner.group_prefix}.drift"
    # read_committed would ask for stable offsets only, and the broker answers "unstable"
    # until the transaction of a replica killed with -9 times out; what is committed is
    # the same either way (offsets of an open transaction are never returned).
    consumer = kafka.consumer(world.settings, group, **{"isolation.level": "read_uncommitted"})
    try:
        committed = consumer.committed([TopicPartition(world.topic(topic), 0)], timeout=10)
        return max(committed[0].offset, 0)
    finally:
        consumer.close()


def alerts(world: World, expect: int = 0) -> list[dict]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.value_schema("drift.alerts")
    messages = read_all(world.settings, world.topic("drift.alerts"), expect, timeout=5, settle=0.5)
    return [serde.decode(m.value(), schema) for m in messages]


def kill(process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


@pytest.mark.slow
def test_shifts_alert_once_within_bound_across_kill_9(world: World):
    ticket_values = list(tickets(TICKETS, seed=21, shift="mean", at=TICKET_SHIFT))
    for index, value in enumerate(ticket_values):
        value["meta"] = meta(index)
    result_values = list(results(RESULTS, seed=22, shift_at=RESULT_SHIFT))
    validated = "support_tickets.validated"

    # Stable history first; kill -9 while drift works through it.
    send(world, validated, ticket_values[:TICKET_SHIFT], "ticket_id")
    # Small transactions, so that the kill lands while the history is being read.
    first = start_processor(world, "drift", **{**DRIFT_ENV, "SLUICE_RUNNER__BATCH_SIZE": "50"})
    wait_for(lambda: committed_offset(world, validated) >= 3_000, 180, "drift to commit 3,000")
    kill(first)
    assert committed_offset(world, validated) < TICKET_SHIFT, "the kill must land mid-stream"

    # Restart, then the shifted tickets and the results arrive while it runs.
    second = start_processor(world, "drift", **DRIFT_ENV)
    send(world, validated, ticket_values[TICKET_SHIFT:], "ticket_id")
    send(world, "inference.results", result_values, "request_id")
    wait_for(lambda: len(alerts(world)) >= 1, 240, "a first drift alert")
    kill(second)  # right after the first alert is visible: mid-stream again

    third = start_processor(world, "drift", **DRIFT_ENV)
    try:
        wait_for(
            lambda: (
                committed_offset(world, validated) >= TICKETS
                and committed_offset(world, "inference.results") >= RESULTS
            ),
            240,
            "drift to finish both streams",
        )
        found = alerts(world, expect=2)
        assert third.poll() is None, process_log(world)
    finally:
        stop_all(world)

    by_signal = Counter(a["signal"] for a in found)
    assert by_signal == {
        "dataset:support_tickets:first_response_minutes": 1,
        "model:minilm:embedding_cosine": 1,
    }, f"{by_signal}\n{process_log(world)[-3000:]}"
    ticket = next(a for a in found if a["subject_kind"] == "dataset")
    # Every ticket has a response time, so a detector that lost nothing and counted
    # nothing twice has seen exactly offset + 1 values when it fires.
    assert ticket["values_seen"] == ticket["window_end"]["offset"] + 1
    assert 0 < ticket["window_end"]["offset"] - TICKET_SHIFT + 1 <= BOUND
    model = next(a for a in found if a["subject_kind"] == "model")
    assert 0 <= model["window_end"]["offset"] - RESULT_SHIFT < BOUND
    assert model["current"]["mean"] < model["reference"]["mean"]
    # Checkpoints of every signal are on the compacted state topic.
    states = read_all(world.settings, world.topic("drift.state"), 1, timeout=5, settle=0.5)
    keys = {m.key().decode() for m in states}
    assert "dataset:support_tickets:first_response_minutes" in keys
    assert "model:minilm:embedding_centroid" in keys

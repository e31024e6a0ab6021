"""The runner's tracing and metrics, seen from outside the process."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.support.world import World, make_world, produce, read_all, running, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_traceparent_continues_into_outputs(world: World, good_ticket):
    from confluent_kafka import Producer

    producer = Producer(world.settings.kafka.client_config())
    producer.produce(
        world.raw,
        value=json.dumps(good_ticket()).encode(),
        headers=[("traceparent", PARENT.encode())],
    )
    producer.produce(world.raw, value=b"garbage", headers=[("traceparent", PARENT.encode())])
    producer.flush(30)
    with running(world, "validate", SLUICE_TELEMETRY__EXPORTER="console"):
        [validated] = read_all(world.settings, world.validated, 1, settle=1)
        [dead] = read_all(world.settings, world.dlq, 1, settle=1)
    header = dict(validated.headers())["traceparent"].decode()
    _version, trace_id, span_id, flags = header.split("-")
    assert trace_id == TRACE_ID, "the output continues the producer's trace"
    assert span_id != "00f067aa0ba902b7", "...as a child of validate's own span"
    assert flags == "01"
    assert dict(dead.headers())["traceparent"] == PARENT.encode(), "DLQ keeps original headers"


def test_traceparent_copied_when_tracing_is_off(world: World, good_ticket):
    from confluent_kafka import Producer

    producer = Producer(world.settings.kafka.client_config())
    producer.produce(
        world.raw,
        value=json.dumps(good_ticket()).encode(),
        headers=[("traceparent", PARENT.encode())],
    )
    producer.flush(30)
    with running(world, "validate"):
        [validated] = read_all(world.settings, world.validated, 1, settle=1)
    assert dict(validated.headers())["traceparent"] == PARENT.encode()


def test_prometheus_metrics(world: World, good_ticket):
    port = free_port()
    values = [json.dumps(good_ticket(ticket_id=f"TCK-{i:08d}")).encode() for i in range(30)]
    produce(world.settings, world.raw, [*values, b"garbage", b"{}"])
    with running(world, "validate", SLUICE_METRICS__PORT=str(port)):
        read_all(world.settings, world.validated, 30, settle=0.5)

        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""

        # Lag comes from librdkafka's statistics, emitted every 5 s.
        wait_for(lambda: "sluice_consumer_lag{" in scraped(), 30, "metrics with lag")
        text = scraped()

    def value(prefix: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
        )

    assert value(f'sluice_records_in_total{{processor="validate",topic="{world.raw}"}}') == 32
    assert (
        value(f'sluice_records_out_total{{processor="validate",topic="{world.validated}"}}') == 30
    )
    assert value("sluice_records_dlq_total{") == 2
    assert value("sluice_contract_violations_total{") >= 1
    assert "sluice_batch_latency_seconds_bucket" in text
    assert "sluice_consumer_lag{" in text

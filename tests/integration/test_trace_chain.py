"""One request, one trace: SDK → guard → infer (with the Triton call) → guard(output) →
meter → sink, exported to telemetry.spans and loaded by the sink into ClickHouse's
otel_traces; span attributes carry no personal data."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.settings import Settings, TelemetrySettings
from streams.warehouse import clickhouse
from tests.support import tenants
from tests.support.world import (
    World,
    make_world,
    process_log,
    read_all,
    running_all,
    wait_for,
)

EMAIL = "maria.garcia@example.com"
TRACED = {"SLUICE_TELEMETRY__EXPORTER": "kafka", "SLUICE_TELEMETRY__ROOT_SAMPLE_RATIO": "1.0"}
GUARD = {"SLUICE_GUARD__HASH_SECRET": "trace-test-secret-0123456789abcdef"}


@pytest.fixture
def world(triton: Settings, tmp_path) -> World:
    world = make_world(triton, tmp_path)
    url = f"chdb://{tmp_path / 'clickhouse'}"
    settings = world.settings.model_copy(
        update={"clickhouse": world.settings.clickhouse.model_copy(update={"url": url})}
    )
    world.sandbox = dataclasses.replace(world.sandbox, settings=settings)
    return world


def request_trace_id(world: World, request_id: str) -> str:
    """The trace id the SDK put in the request's traceparent header."""
    for message in read_all(world.settings, world.topic("inference.requests"), 1, settle=0.5):
        if message.key() == request_id.encode():
            traceparent = dict(message.headers() or [])["traceparent"].decode()
            return traceparent.split("-")[1]
    raise AssertionError(f"request {request_id} is not in inference.requests")


def trace_in_clickhouse(world: World, trace_id: str) -> list[dict]:
    """The trace's spans in otel_traces (through the sink, which owns the embedded database)."""
    db = clickhouse.open_warehouse(world.settings, database=world.settings.clickhouse.database)
    try:
        return db.query(
            "SELECT SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, SpanAttributes, "
            f"Duration FROM otel_traces FINAL WHERE TraceId = '{trace_id}'"
        ).dicts()
    finally:
        db.close()


def spans_by_trace(world: World, expect: int, settle: float = 3.0) -> dict[str, list[dict]]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.Span"]
    traces: dict[str, list[dict]] = defaultdict(list)
    for message in read_all(world.settings, world.topic("telemetry.spans"), expect, settle=settle):
        span = serde.decode(message.value(), schema)
        traces[span["trace_id"]].append(span)
        assert EMAIL.encode() not in message.value(), "personal data in a span"
    return traces


def test_one_request_one_connected_trace(world: World):
    traced = world.settings.model_copy(update={"telemetry": TelemetrySettings(exporter="kafka")})
    request = InferenceRequest.new(
        "globex", "textgen", f"Please reply to {EMAIL} today", max_tokens=4, temperature=0.0
    )
    with running_all(world, ["guard", "infer", "meter", "sink"], **TRACED, **GUARD):
        with tenants.client(traced, world.catalog, "globex", source="trace-test") as client:
            client.send_request(request)
        read_all(world.settings, world.topic("inference.results"), 1, timeout=300, settle=0.5)
        trace_id = request_trace_id(world, request.request_id)
        # Spans are exported in batches (every 5 s) and loaded by the sink in its next batch.
        wanted = {"sluice-sdk", "sluice-guard", "sluice-infer", "sluice-meter", "sluice-sink"}
        stored: list[dict] = []
        trace: list[dict] = []

        def complete() -> bool:
            stored[:] = trace_in_clickhouse(world, trace_id)
            sink_spans = {s["SpanName"] for s in stored if s["ServiceName"] == "sluice-sink"}
            return {s["ServiceName"] for s in stored} >= wanted and len(sink_spans) >= 2

        wait_for(complete, 180, f"trace {trace_id} in otel_traces\n{process_log(world)[-3000:]}")

        # The sink's own spans are exported after the batch they describe and loaded with a
        # later one: compare while it still runs, until every exported span is loaded.
        request_id = request.request_id

        def all_loaded() -> bool:
            trace[:] = next(
                (
                    spans
                    for spans in spans_by_trace(world, 5, settle=0.5).values()
                    if any(s["attributes"].get("sluice.request_id") == request_id for s in spans)
                ),
                [],
            )
            stored[:] = trace_in_clickhouse(world, trace_id)
            exported = {s["span_id"] for s in trace}
            # Each service exports on its own timer: a child's span (meter's) can be out
            # before its parent's (guard's output pass). Wait until every parent is too.
            parents = {s["parent_span_id"] for s in trace if s["parent_span_id"]}
            return parents <= exported <= {s["SpanId"] for s in stored}

        wait_for(all_loaded, 120, f"every exported span of {trace_id} in otel_traces")
    assert trace, "the request's trace is in telemetry.spans"
    services = {s["service_name"] for s in trace}
    assert {"sluice-sdk", "sluice-guard", "sluice-infer"} <= services
    by_id = {s["span_id"]: s for s in trace}
    roots = [s for s in trace if not s["parent_span_id"]]
    assert len(roots) == 1 and roots[0]["service_name"] == "sluice-sdk"
    for span in trace:
        if span["parent_span_id"]:
            assert span["parent_span_id"] in by_id, f"{span['name']} hangs off the trace"
    triton_call = next(s for s in trace if s["kind"] == "SPAN_KIND_CLIENT")
    assert triton_call["name"] == "text_completion textgen"
    assert by_id[triton_call["parent_span_id"]]["service_name"] == "sluice-infer"
    infer_span = by_id[triton_call["parent_span_id"]]
    attrs = infer_span["attributes"]
    assert attrs["gen_ai.request.model"] == "textgen"
    assert attrs["gen_ai.operation.name"] == "text_completion"
    assert int(attrs["gen_ai.usage.output_tokens"]) == 4
    assert int(attrs["gen_ai.usage.input_tokens"]) > 0
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.consumer.group.name"].endswith(".infer")
    guard_spans = [s for s in trace if s["service_name"] == "sluice-guard"]
    assert {s["attributes"]["sluice.guard.field"] for s in guard_spans} == {
        "input_text",
        "output_text",
    }, "guard's input and output passes are both in the trace"
    assert any(s["attributes"]["sluice.guard.entities"] == "EMAIL_ADDRESS:1" for s in guard_spans)

    # The same trace in ClickHouse, continued by meter and the sink, in one piece.
    in_db = {s["SpanId"]: s for s in stored}
    assert {s["span_id"] for s in trace} <= set(in_db), "every exported span was loaded"
    for span in stored:
        assert not span["ParentSpanId"] or span["ParentSpanId"] in in_db, span["SpanName"]
        assert EMAIL not in str(span), "personal data in a stored span"
    meter_span = next(s for s in stored if s["ServiceName"] == "sluice-meter")
    assert meter_span["SpanKind"] == "Consumer"
    assert in_db[meter_span["ParentSpanId"]]["ServiceName"] == "sluice-guard"  # guard(output)
    assert meter_span["SpanAttributes"]["gen_ai.request.model"] == "textgen"
    assert meter_span["SpanAttributes"]["gen_ai.usage.output_tokens"] == "4"
    sink_parents = {
        in_db[s["ParentSpanId"]]["ServiceName"]
        for s in stored
        if s["ServiceName"] == "sluice-sink" and s["ParentSpanId"]
    }
    assert {"sluice-guard", "sluice-meter"} <= sink_parents  # the result, and its usage event
